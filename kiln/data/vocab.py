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
from kiln.core.errors import KilnError

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
        return cls.from_counts(Counter(t for tokens in token_lists for t in tokens), min_freq, max_size)

    @classmethod
    def from_counts(cls, counts: dict[str, int], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """The most frequent tokens first (ties alphabetical), those seen fewer than min_freq times left out."""
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[:max_size - 2]
        return cls([PAD, UNK, *ranked])

    @classmethod
    def from_store(cls, store, rows, tokens: list[str], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """From `rows` (the training split) of a kiln.data.token_store.TokenStore of numbers into `tokens`."""
        counts = store.counts(rows, len(tokens))
        return cls.from_counts({t: int(c) for t, c in zip(tokens, counts.tolist()) if c}, min_freq, max_size)

    def lookup(self, tokens: list[str]):
        """The ids of `tokens` (<unk> for those not in the vocabulary), as a numpy array indexable by number."""
        import numpy as np

        return np.fromiter((self.stoi.get(t, self.unk_id) for t in tokens), dtype=np.int32, count=len(tokens))

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
