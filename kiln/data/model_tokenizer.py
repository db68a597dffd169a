"""A Hugging Face model's own tokenizer in place of kiln's vocabulary (`data.text.tokenizer: model`, the default for
`hf:` models): the ids the pretrained embeddings were trained on, with the model's special tokens, truncated at
`data.text.max_len` (unset: the model's position limit). Texts are tokenized in batches (the fast tokenizers are
Rust) and cached like kiln's tokens; the tokenizer is saved in the run folder (`tokenizer/`), so `kiln test`,
`predict` and `export` encode exactly as training did.

It answers what kiln.data.vocab.Vocab answers (len, pad_id, encode, encode_texts, tokens, save), so the text
pipeline does not ask which one it has.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from kiln.config import TextConfig
from kiln.core.errors import KilnError, first_line

log = logging.getLogger("kiln")
BATCH = 4096  # texts per call into the tokenizer
UNBOUNDED = 10**6  # transformers' model_max_length when the tokenizer does not know its model's limit


class ModelTokenizer:
    """`transformers.AutoTokenizer` of a model folder, loaded on first use."""

    def __init__(self, folder: Path | None = None, ref: str | None = None, download: bool = False):
        self._folder, self._ref, self._download = folder, ref, download
        self._tokenizer: Any = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            from kiln.core.hf_hub import hf_folder

            self._folder = hf_folder(str(self._ref), self._download)
        return self._folder

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from kiln.core.hf_hub import need_transformers, quiet

            need_transformers(f"data.text.tokenizer=model ({self._ref or self.folder})")
            quiet()
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise KilnError(f"cannot load the tokenizer of {self.folder}: {first_line(e)} (a Hugging Face "
                                "folder holds tokenizer.json or vocab.txt beside config.json)") from None
        return self._tokenizer

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # GPT-style: pad with eos
        if pad is None:
            raise KilnError(f"the tokenizer of {self.folder} has neither a padding nor an end token to pad with")
        return int(pad)

    def limit(self) -> int | None:
        """The model's longest input, from its config.json, else the tokenizer's model_max_length."""
        from kiln.core.hf_hub import folder_config, max_positions

        if (self.folder / "config.json").is_file():
            longest = max_positions(folder_config(self.folder))
            if longest:
                return longest
        length = int(getattr(self.tokenizer, "model_max_length", UNBOUNDED))
        return length if length < UNBOUNDED else None

    def max_len(self, cfg: TextConfig) -> int:
        """data.text.max_len, checked against the model's limit (unset: the limit itself, else 512)."""
        limit = self.limit()
        if cfg.max_len and limit and cfg.max_len > limit:
            raise KilnError(f"data.text.max_len={cfg.max_len} is longer than the {limit} tokens the model's "
                            f"position embeddings hold ({self.folder}); set data.text.max_len <= {limit}")
        return cfg.max_len or limit or 512

    def fingerprint(self) -> str:
        """What the token cache is keyed by: the tokenizer's files, so another tokenizer never reads its ids."""
        digest = hashlib.sha256()
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and ("token" in path.name or path.suffix in (".txt", ".model") or
                                   path.name in ("merges.txt", "vocab.json", "config.json")):
                digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()[:32]

    def encode_batch(self, texts: list[str], cfg: TextConfig) -> list[list[int]]:
        """Ids of every text, with the model's special tokens, truncated at max_len; at least one id each."""
        length, tok = self.max_len(cfg), self.tokenizer
        fallback = [tok.unk_token_id if tok.unk_token_id is not None else self.pad_id]
        backend = getattr(tok, "backend_tokenizer", None) if getattr(tok, "is_fast", False) else None
        if backend is not None:  # the Rust tokenizer itself: the same ids, without transformers' per-call wrapping
            backend.enable_truncation(length)
        ids: list[list[int]] = []
        for start in range(0, len(texts), BATCH):
            chunk = [t.replace("\\n", " ") for t in texts[start:start + BATCH]]
            if backend is not None:
                out = [e.ids for e in backend.encode_batch(chunk, add_special_tokens=True)]
            else:
                out = tok(chunk, truncation=True, max_length=length, return_attention_mask=False,
                          return_token_type_ids=False)["input_ids"]
            ids += [seq or fallback for seq in out]
        return ids

    def encode(self, ids: list[int], max_len: int | None = None) -> list[int]:
        """Already ids, truncated with their special tokens kept (cutting again would drop the end token)."""
        return ids

    def encode_texts(self, texts: list[str], cfg: TextConfig) -> list[torch.Tensor]:
        return [torch.tensor(seq, dtype=torch.int32) for seq in self.encode_batch(texts, cfg)]

    def tokens(self, ids: list[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(ids))

    def save(self, folder: Path) -> None:
        """The tokenizer files (and the model's config.json, which holds its length limit) into `folder`."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.tokenizer.save_pretrained(tmp)
        if (self.folder / "config.json").is_file():
            shutil.copy2(self.folder / "config.json", tmp / "config.json")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)


def fresh_encoder(cfg: Any) -> ModelTokenizer | None:
    """The text encoder a new run starts from: an hf: model's tokenizer (data.text.tokenizer=model), or None —
    kiln then builds its vocabulary from the training split."""
    if cfg.data.text.tokenizer != "model":
        return None
    return ModelTokenizer(ref=cfg.model.name.split(":", 1)[1], download=cfg.model.download)
