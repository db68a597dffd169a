"""The tokenization cache: a text file's (or table's) tokens, keyed by its contents and the tokenizer settings, so
a second run (or a tune trial) does not tokenize again. `$KILN_CACHE`, else `~/.cache/kiln`.

A file is read and tokenized in chunks and kept compact (kiln.data.token_store): with kiln's tokenizer each row
is numbers into the file's own list of distinct tokens (a vocabulary maps them to its ids in one array
operation); with a model's tokenizer they are the model's ids. An entry is a folder (ids.npy, offsets.npy,
labels.npy, meta.json) that loads memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.config import TextConfig
from kiln.data.arrow_tokens import number_tokens
from kiln.data.csv_rows import Rows
from kiln.data.token_store import TokenStore

if TYPE_CHECKING:
    from kiln.data.text_rows import TextRows

log = logging.getLogger("kiln")
LAYOUT = 2  # 1: one gzipped JSON of token strings per file (ignored now)


@dataclass
class Tokenized:
    """A CSV file's rows, tokenized. `store` row i: numbers into `tokens` (kiln's tokenizer), or a model
    tokenizer's ids when `tokens` is None. `labels`: the raw label cells (None: the file has no label column)."""

    store: TokenStore
    tokens: list[str] | None
    labels: list[str] | None
    skipped: int

    @property
    def rows(self) -> Rows:
        """The labels as kiln.data.csv_rows reads them (the texts themselves are not kept)."""
        return Rows([], self.labels, self.skipped)


def cached_tokens(rows: TextRows, cfg: TextConfig, empty_labels: bool = False, model_tokenizer: Any = None
                  ) -> Tokenized:
    """The rows tokenized, from the cache when the same rows were tokenized with the same settings before."""
    folder = cache_dir() / _key(rows, cfg, empty_labels, model_tokenizer)
    if (folder / "meta.json").is_file():
        try:
            found = _load(folder)
            log.info("tokenized %s: cache hit (%s)", rows.where, folder)
            return found
        except (OSError, ValueError, KeyError):
            log.warning("ignoring an unreadable token cache %s", folder)
    tokenized = _tokenize(rows, cfg, empty_labels, model_tokenizer)
    try:
        _save(tokenized, folder)
    except OSError as e:
        log.warning("could not write the token cache %s: %s", folder, e)
    return tokenized


def _key(rows: TextRows, cfg: TextConfig, empty_labels: bool, model_tokenizer: Any) -> str:
    settings: dict[str, Any] = {k: getattr(cfg, k) for k in ("text_columns", "label_column", "tokenizer", "ngrams",
                                                               "on_bad_row")}
    settings["layout"] = LAYOUT
    if model_tokenizer is not None:  # ids, truncated: another tokenizer or length is another cache entry
        settings.update(model=model_tokenizer.fingerprint(), max_len=model_tokenizer.max_len(cfg))
    if empty_labels:  # rows with an empty label are kept (multilabel): a different set of rows
        settings["empty_labels"] = True
    return hashlib.sha256(json.dumps([rows.fingerprint(), settings]).encode()).hexdigest()[:32]


def _tokenize(rows: TextRows, cfg: TextConfig, empty_labels: bool, model_tokenizer: Any) -> Tokenized:
    numbers: dict[str, int] = {}  # kiln's tokens -> this file's numbers for them
    parts, labels, skipped, has_labels = [], [], 0, False
    for chunk in rows.chunks(cfg, empty_labels):
        if model_tokenizer is not None:
            texts = chunk.texts.to_pylist() if hasattr(chunk.texts, "to_pylist") else chunk.texts
            parts.append(TokenStore.from_rows(model_tokenizer.encode_batch(texts, cfg)))
        else:  # a whole chunk's texts through Arrow's string kernels: no Python loop per row
            parts.append(number_tokens(chunk.texts, cfg, numbers))
        if chunk.labels is not None:
            labels += chunk.labels
            has_labels = True
        skipped = chunk.skipped
    tokens = None if model_tokenizer is not None else list(numbers)
    _release_arrow_memory()
    return Tokenized(TokenStore.concat(parts, consume=True), tokens, labels if has_labels else None, skipped)


def _release_arrow_memory() -> None:
    """Hand the memory Arrow's kernels worked in back to the system: the rest of the build needs it."""
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def _save(tokenized: Tokenized, folder: Path) -> None:
    """Into a temporary folder beside it, renamed when complete: a reader never sees half an entry."""
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenized.store.save(tmp)
        values: list[str] = []
        if tokenized.labels is not None:
            distinct, codes = np.unique(np.asarray(tokenized.labels, dtype=object), return_inverse=True)
            values = [str(v) for v in distinct]
            np.save(tmp / "labels.npy", codes.astype(np.int32))
        (tmp / "meta.json").write_text(json.dumps({
            "tokens": tokenized.tokens, "label_values": values,
            "has_labels": tokenized.labels is not None, "skipped": tokenized.skipped}, ensure_ascii=False))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> Tokenized:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    labels = None
    if meta["has_labels"]:
        values = meta["label_values"]
        labels = [values[c] for c in np.load(folder / "labels.npy").tolist()]
    return Tokenized(TokenStore.load(folder), meta["tokens"], labels, int(meta["skipped"]))


def cache_dir() -> Path:
    if os.environ.get("KILN_CACHE"):
        return Path(os.environ["KILN_CACHE"]) / "tokens"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln" / "tokens"
