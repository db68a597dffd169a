"""Tokens and the vocabulary: the tokenizer (basic_english or whitespace, plus n-grams), `Vocab` (built from the
training split only, saved in the run folder as vocab.json), and encoding texts to id tensors."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from kiln.config import TextConfig
from kiln.errors import KilnError

PAD, UNK = "<pad>", "<unk>"

_WORDS = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def tokenize(text: str, cfg: TextConfig) -> list[str]:
    """basic_english: lowercase, words and punctuation split apart; plus n-grams up to cfg.ngrams."""
    text = text.replace("\\n", " ").replace("\\", " ")  # AG News writes line breaks as literal backslashes
    tokens = text.split() if cfg.tokenizer == "whitespace" else _WORDS.findall(text.lower())
    grams = list(tokens)
    for n in range(2, cfg.ngrams + 1):
        grams += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return grams


class Vocab:
    """Token <-> id. Id 0 is <pad>, id 1 is <unk>; built from the training split only."""

    def __init__(self, itos: list[str]):
        assert itos[:2] == [PAD, UNK], itos[:2]
        self.itos = itos
        self.stoi = {t: i for i, t in enumerate(itos)}

    pad_id, unk_id = 0, 1

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        counts = Counter(t for tokens in token_lists for t in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[:max_size - 2]
        return cls([PAD, UNK] + ranked)

    def encode(self, tokens: list[str], max_len: int | None = None) -> list[int]:
        ids = [self.stoi.get(t, self.unk_id) for t in tokens[:max_len]]
        return ids or [self.unk_id]  # an empty text still has one token, so lengths are >= 1

    def encode_texts(self, texts: list[str], cfg: TextConfig) -> list[torch.Tensor]:
        return [torch.tensor(self.encode(tokenize(t, cfg), cfg.max_len), dtype=torch.int32) for t in texts]

    def tokens(self, ids: list[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"itos": self.itos}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            return cls(json.loads(Path(path).read_text())["itos"])
        except (OSError, ValueError, KeyError, AssertionError) as e:
            raise KilnError(f"cannot read the vocabulary {path}: {e}") from None


def encode_texts(texts: list[str], vocab, cfg: TextConfig) -> list[torch.Tensor]:
    """Texts as id tensors, by kiln's vocabulary or a model's tokenizer (kiln.data.model_tokenizer)."""
    return vocab.encode_texts(texts, cfg)
