"""The tokenization cache: a CSV file's tokens, keyed by the file's content hash and the tokenizer settings, so a
second run (or a tune trial) does not tokenize again. `$KILN_CACHE`, else `~/.cache/kiln`."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from kiln.config import TextConfig
from kiln.data.csv_rows import Rows, read_rows
from kiln.data.registry import CsvDataset
from kiln.data.vocab import tokenize

log = logging.getLogger("kiln")


def cached_tokens(path: Path, spec: CsvDataset, cfg: TextConfig, empty_labels: bool = False,
                  model_tokenizer: Any = None) -> tuple[list[Any], Rows]:
    """Tokenized rows of a CSV file, cached by file content hash and tokenizer settings: kiln's tokens (strings,
    mapped to ids by the run's vocabulary), or with `model_tokenizer` (kiln.data.model_tokenizer) its ids."""
    settings: dict[str, Any] = {k: getattr(cfg, k) for k in ("text_columns", "label_column", "tokenizer", "ngrams",
                                                               "on_bad_row")}
    if model_tokenizer is not None:  # ids, truncated: another tokenizer or length is another cache entry
        settings.update(model=model_tokenizer.fingerprint(), max_len=model_tokenizer.max_len(cfg))
    if empty_labels:  # rows with an empty label are kept (multilabel): a different set of rows
        settings["empty_labels"] = True
    key = hashlib.sha256(Path(path).read_bytes() + json.dumps([spec.name, settings]).encode()).hexdigest()[:32]
    cache = cache_dir() / f"{key}.json.gz"
    if cache.is_file():
        try:
            with gzip.open(cache, "rt", encoding="utf-8") as f:
                saved = json.load(f)
            log.info("tokenized %s: cache hit (%s)", Path(path).name, cache)
            return saved["tokens"], Rows(saved["texts"], saved["labels"], saved["skipped"])
        except (OSError, ValueError, KeyError):
            log.warning("ignoring an unreadable token cache %s", cache)
    rows = read_rows(path, spec, cfg, empty_labels=empty_labels)
    tokens = model_tokenizer.encode_batch(rows.texts, cfg) if model_tokenizer is not None else \
        [tokenize(t, cfg) for t in rows.texts]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
            json.dump({"tokens": tokens, "texts": rows.texts, "labels": rows.labels, "skipped": rows.skipped}, f)
        tmp.replace(cache)
    except OSError as e:
        log.warning("could not write the token cache %s: %s", cache, e)
    return tokens, rows


def cache_dir() -> Path:
    if os.environ.get("KILN_CACHE"):
        return Path(os.environ["KILN_CACHE"]) / "tokens"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln" / "tokens"
