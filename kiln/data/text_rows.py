"""Where a text dataset's rows come from: a CSV file (kiln.data.csv_rows reads it) or an Arrow table's columns (a
Hugging Face dataset, Parquet files: kiln.data.hf_tables opens them). Each gives its rows in chunks of texts and
label cells, says what identifies its contents (the token cache's key) and where it is (for messages)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kiln.config import TextConfig
from kiln.core.errors import KilnError
from kiln.data.csv_rows import CHUNK, Rows, read_rows, row_chunks
from kiln.tasks.targets import UNIT


class TextRows(Protocol):
    where: str  # for messages: the file, or the table and split
    one_based: bool  # integer labels count from 1 (AG News)

    def fingerprint(self) -> str: ...  # changes when the rows change

    def chunks(self, cfg: TextConfig, empty_labels: bool) -> Iterator[Rows]: ...

    def texts(self, cfg: TextConfig) -> list[str]: ...  # every text, for showing samples


@dataclass(frozen=True)
class CsvText:
    """A text CSV file of a registered dataset (its layout: `spec.header`)."""

    path: Path | str  # a local file, or a URL (read through fsspec)
    spec: Any  # kiln.data.registry.CsvDataset

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def one_based(self) -> bool:
        return not self.spec.header

    def fingerprint(self) -> str:
        from kiln.core.storage import open_file

        digest = hashlib.sha256()
        with open_file(str(self.path)) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"{self.spec.name}\0{digest.hexdigest()}"

    def chunks(self, cfg: TextConfig, empty_labels: bool) -> Iterator[Rows]:
        return row_chunks(self.path, self.spec, cfg, empty_labels=empty_labels)

    def texts(self, cfg: TextConfig) -> list[str]:
        return read_rows(self.path, self.spec, cfg, require_labels=False).texts


@dataclass(frozen=True)
class TableText:
    """The text columns of an Arrow table (joined with a space) and its label column; a ClassLabel's numbers read
    as its names."""

    table: Any  # kiln.data.hf_tables.Table
    label_names: list[str] | None = None  # a ClassLabel feature's names
    one_based = False

    @property
    def where(self) -> str:
        return self.table.where

    def fingerprint(self) -> str:
        return self.table.identity

    def _columns(self, cfg: TextConfig) -> tuple[list[str], list[str]]:
        from kiln.tasks.targets import columns

        have = self.table.column_names
        labels = columns(cfg.label_column)
        missing = [c for c in (*cfg.text_columns, *labels) if c not in have]
        if missing:
            raise KilnError(f"{self.where} has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(have)}); set data.text.text_columns / data.text.label_column")
        return list(cfg.text_columns), labels

    def chunks(self, cfg: TextConfig, empty_labels: bool, size: int = 8 * CHUNK) -> Iterator[Rows]:
        """Record batches of `size` rows, read one at a time: texts as an Arrow array (tokenized as a column), label
        cells as text; rows with an empty label stop with their row number, or are skipped (data.on_bad_row)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        text_columns, label_columns = self._columns(cfg)
        skipped, start = 0, 0
        for part in self.table.batches([*dict.fromkeys([*text_columns, *label_columns])], size):
            parts = [pc.fill_null(part.column(c).cast(pa.large_string()), "") for c in text_columns]
            texts = parts[0] if len(parts) == 1 else \
                pc.binary_join_element_wise(*parts, pa.scalar(" ", pa.large_string()))
            labels = [self._cells(part.column(c)) for c in label_columns]
            joined = labels[0] if len(labels) == 1 else [UNIT.join(cells) for cells in zip(*labels)]
            empty = [] if empty_labels else [i for i, cells in enumerate(zip(*labels)) if not all(cells)]
            if empty:
                if cfg.on_bad_row == "error":
                    raise KilnError(f"{self.where}, row {start + empty[0]}: empty label. Fix the row, or set "
                                    "data.on_bad_row=skip to skip such rows")
                keep = sorted(set(range(len(joined))) - set(empty))
                texts, joined = texts.take(pa.array(keep, pa.int64())), [joined[i] for i in keep]
                skipped += len(empty)
            start += part.num_rows
            yield Rows(texts, joined, skipped)  # texts: an Arrow array (kiln.data.arrow_tokens reads it whole)

    def _cells(self, column: Any) -> list[str]:
        """The label cells as text, through the column's distinct values (millions of rows, a few labels)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        values = encoded.dictionary.to_pylist()
        if self.label_names is not None:
            names = self.label_names
            values = [names[int(v)] if v is not None and 0 <= int(v) < len(names) else "" for v in values]
        cells = ["" if v is None else str(v) for v in values] + [""]  # the last: a missing value
        codes = np.asarray(encoded.indices.fill_null(len(values)))
        return [cells[i] for i in codes.tolist()]

    def texts(self, cfg: TextConfig) -> list[str]:
        out: list[str] = []
        for rows in self.chunks(cfg, empty_labels=True):
            out += rows.texts.to_pylist() if hasattr(rows.texts, "to_pylist") else list(rows.texts)
        return out
