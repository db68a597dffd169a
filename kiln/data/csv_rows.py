"""Rows of text-classification CSV files: the AG News layout (no header, quoted fields) or any CSV with a
header; labels as names or integers; malformed rows stopped at or skipped, with file and line."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.config import TextConfig
from kiln.core.errors import KilnError
from kiln.core.storage import open_text
from kiln.tasks.targets import UNIT

if TYPE_CHECKING:
    from kiln.data.registry import CsvDataset

log = logging.getLogger("kiln")


CHUNK = 16384  # rows read (and tokenized) at a time


@dataclass
class Rows:
    texts: list[str]
    labels: list[str] | None  # raw label values as written (several columns joined by UNIT); None: no label column
    skipped: int = 0


def read_rows(path: Path | str, spec: CsvDataset, cfg: TextConfig, require_labels: bool = True,
              empty_labels: bool = False) -> Rows:
    """Read one CSV file. Malformed rows raise (with file and line) or are skipped, per cfg.on_bad_row.
    `empty_labels`: an empty label cell is a sample without labels (multilabel), not a malformed row."""
    texts: list[str] = []
    labels: list[str] | None = None
    skipped = 0
    for chunk in row_chunks(path, spec, cfg, require_labels, empty_labels):
        texts += chunk.texts
        if chunk.labels is not None:
            labels = [] if labels is None else labels
            labels += chunk.labels
        skipped = chunk.skipped
    return Rows(texts, labels, skipped)


def row_chunks(path: Path | str, spec: CsvDataset, cfg: TextConfig, require_labels: bool = True,
               empty_labels: bool = False, size: int = CHUNK) -> Iterator[Rows]:
    """The file's rows, `size` at a time (so a large file is tokenized without holding all its texts); each
    chunk's `skipped` is the count of malformed rows so far. At least one chunk, possibly empty."""
    texts: list[str] = []
    labels: list[str] = []
    skipped, first_bad, yielded = 0, None, False
    try:
        with open_text(path) as f:
            reader = csv.reader(f)
            text_idx, label_idx, width = _columns(reader, path, spec, cfg, require_labels)
            label_idx = label_idx or None
            for row in reader:
                if not row:
                    continue
                problem = None if len(row) == width else f"expected {width} columns, found {len(row)}"
                if problem is None and label_idx is not None and not empty_labels \
                        and not all(row[i].strip() for i in label_idx):
                    problem = "empty label"
                if problem:
                    if cfg.on_bad_row == "error":
                        raise KilnError(f"{path}, line {reader.line_num}: malformed row ({problem}). Fix the row, "
                                        "or set data.on_bad_row=skip to skip such rows")
                    skipped += 1
                    first_bad = first_bad or f"line {reader.line_num}: {problem}"
                    continue
                texts.append(" ".join(row[i] for i in text_idx))
                if label_idx is not None:
                    labels.append(UNIT.join(row[i].strip() for i in label_idx))
                if len(texts) == size:
                    yield Rows(texts, labels if label_idx is not None else None, skipped)
                    texts, labels, yielded = [], [], True
    except UnicodeDecodeError as e:
        raise KilnError(f"{path} is not UTF-8 text ({e}); re-save it as UTF-8") from None
    except csv.Error as e:
        raise KilnError(f"{path} is not a valid CSV file: {e}") from None
    if skipped:
        log.warning("skipped %d malformed rows in %s (first: %s)", skipped, path, first_bad)
    if texts or not yielded:
        yield Rows(texts, labels if label_idx is not None else None, skipped)


def _columns(reader, path: Path | str, spec: CsvDataset, cfg: TextConfig, require_labels: bool):
    """(text column indices, label column indices (empty: none), expected row width)."""
    from kiln.tasks.targets import columns

    if not spec.header:  # AG News: "class index","title","description"
        return [1, 2], [0], 3
    header = next(reader, None)
    if header is None:
        raise KilnError(f"{path} is empty; a text_csv file starts with a header row")
    header = [h.strip() for h in header]
    missing = [c for c in cfg.text_columns if c not in header]
    if missing:
        raise KilnError(f"{path} has no column {', '.join(map(repr, missing))} (its header: {', '.join(header)}); "
                        "set data.text.text_columns")
    label_columns = columns(cfg.label_column)
    absent = [c for c in label_columns if c not in header]
    if (absent or not label_columns) and require_labels:
        raise KilnError(f"{path} has no label column {', '.join(map(repr, absent or ['(none set)']))} (its header: "
                        f"{', '.join(header)}); set data.text.label_column")
    label_idx = [] if absent else [header.index(c) for c in label_columns]
    return [header.index(c) for c in cfg.text_columns], label_idx, len(header)


def row_targets(rows: Rows, class_names: list[str], path: Path | str, cfg: TextConfig, task: str = "multiclass",
                separator: str = "|", one_based: bool = False) -> tuple[list, list[int]]:
    """The rows' targets for the task — class indices (from names or integers), multi-hot vectors, values — and
    the indices of the rows kept; a bad one (unknown label, a number that is not one) raises or is skipped per
    on_bad_row."""
    from kiln.tasks import task_class

    assert rows.labels is not None, "training and test files are read with require_labels=True"
    out, keep = [], []
    parsed: dict[str, tuple] = {}  # a file of millions of rows has far fewer distinct label cells
    for i, raw in enumerate(rows.labels):
        if raw not in parsed:
            parsed[raw] = task_class(task).parse_cells(raw.split(UNIT), class_names, separator, one_based)
        value, problem = parsed[raw]
        if value is None:
            if cfg.on_bad_row == "error":
                raise KilnError(f"{path}: row {i + 1}: {problem}. Fix it, or set data.on_bad_row=skip")
            continue
        out.append(value)
        keep.append(i)
    if len(keep) != len(rows.labels):
        log.warning("skipped %d rows with bad labels or targets in %s", len(rows.labels) - len(keep), path)
    return out, keep
