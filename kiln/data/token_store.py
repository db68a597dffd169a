"""Tokenized texts stored compactly: every row's ids back to back in one int32 array, plus int64 offsets (row i
is ids[offsets[i]:offsets[i + 1]]). Thirty tokens cost 120 bytes instead of a Python list of strings (~5 KB), a
store saves to two .npy files that load memory-mapped, and selecting, mapping, truncating and padding rows are
array operations, never a loop over rows."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np

GATHER_ROWS = 1 << 18


class TokenStore:
    def __init__(self, ids: np.ndarray, offsets: np.ndarray):
        self.ids, self.offsets = ids, offsets

    @classmethod
    def from_rows(cls, rows: Iterable[list[int]]) -> TokenStore:
        """From lists of ids (one chunk of a file: the lists are dropped once the arrays are built)."""
        rows = list(rows)
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
        return cls(flat, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    @classmethod
    def concat(cls, parts: list[TokenStore], consume: bool = False) -> TokenStore:
        """The parts' rows back to back. `consume`: empty `parts` while copying, so a part's memory is freed as soon
        as it is copied (10M rows: 1.2 GB of ids held once, not twice)."""
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(1, np.int64))
        lengths = np.concatenate([p.lengths for p in parts])
        ids = np.empty(sum(len(p.ids) for p in parts), dtype=np.int32)
        at, queue = 0, parts if consume else list(parts)
        queue.reverse()  # popped from the end: each part dropped once copied
        while queue:
            part = queue.pop()
            ids[at:at + len(part.ids)] = part.ids
            at += len(part.ids)
            del part
        return cls(ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def take(self, rows: np.ndarray | list[int]) -> TokenStore:
        """These rows, in this order, as a new (in-memory) store."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths[rows]
        return self._gather(starts, lengths)

    def counts(self, rows: np.ndarray, minlength: int) -> np.ndarray:
        """How often each id occurs in these rows (a vocabulary's counts), a chunk of rows at a time."""
        rows = np.asarray(rows, dtype=np.int64)
        total = np.zeros(minlength, dtype=np.int64)
        for first in range(0, len(rows), GATHER_ROWS):
            total += np.bincount(self.take(rows[first:first + GATHER_ROWS]).ids, minlength=minlength)
        return total

    def truncate(self, max_len: int | None) -> TokenStore:
        """Every row cut to its first max_len ids."""
        if not max_len or len(self) == 0 or self.lengths.max() <= max_len:
            return self
        return self._gather(self.offsets[:-1], np.minimum(self.lengths, max_len))

    def map(self, table: np.ndarray, in_place: bool = False) -> TokenStore:
        """ids -> table[ids] (a file's own token numbers to a vocabulary's ids); `in_place` overwrites this
        store's own ids (a store just made by take: no second copy of millions of ids)."""
        table = np.asarray(table, dtype=np.int32)
        if in_place and isinstance(self.ids, np.ndarray) and not isinstance(self.ids, np.memmap) \
                and self.ids.flags.writeable and self.ids.dtype == np.int32:
            np.take(table, self.ids, out=self.ids, mode="clip")  # unbuffered: each id is read before it is written
            return self
        return TokenStore(table[self.ids], self.offsets)

    def fill_empty(self, token: int) -> TokenStore:
        """Rows without ids get one `token` (every sequence has a length >= 1)."""
        empty = np.flatnonzero(self.lengths == 0)
        if not len(empty):
            return self
        ids = np.insert(self.ids, self.offsets[empty], token).astype(np.int32)
        lengths = self.lengths
        lengths[empty] = 1
        return TokenStore(ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def _gather(self, starts: np.ndarray, lengths: np.ndarray) -> TokenStore:
        """Rows `starts[i]`..+`lengths[i]` of ids, back to back; `GATHER_ROWS` rows at a time, so the int64 index
        arrays stay small next to the int32 ids (10M rows of 30 tokens would need 2.4 GB of them at once)."""
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out = np.empty(int(offsets[-1]), dtype=np.int32)
        for first in range(0, len(lengths), GATHER_ROWS):
            last = min(first + GATHER_ROWS, len(lengths))
            begin, end = offsets[first], offsets[last]
            # position k of the output comes from starts[row(k)] + (k - offsets[row(k)])
            source = np.repeat(starts[first:last] - offsets[first:last], lengths[first:last])
            source += np.arange(begin, end, dtype=np.int64)
            out[begin:end] = self.ids[source]
        return TokenStore(out, offsets)

    def save(self, folder: Path) -> None:
        np.save(folder / "ids.npy", np.ascontiguousarray(self.ids))
        np.save(folder / "offsets.npy", np.ascontiguousarray(self.offsets))

    @classmethod
    def load(cls, folder: Path) -> TokenStore:
        """Memory-mapped: the ids are read from the page cache as rows are used."""
        return cls(np.load(folder / "ids.npy", mmap_mode="r"), np.load(folder / "offsets.npy"))


class MappedRows:
    """Rows of a store as a model reads them — through `table` (a file's token numbers -> a vocabulary's ids), cut
    at `max_len`, an empty row given the one id `fill` — worked out row by row when a batch asks: a split costs its
    row index, not a second copy of its ids (10M rows of 30 tokens: 1.2 GB not held twice)."""

    def __init__(self, store: TokenStore, rows: np.ndarray, table: np.ndarray | None = None,
                 max_len: int | None = None, fill: int | None = None):
        self.store, self.rows, self.table = store, np.asarray(rows, dtype=np.int64), table
        self.max_len, self.fill = max_len, fill
        lengths = store.lengths[self.rows]
        if max_len:
            lengths = np.minimum(lengths, max_len)
        self.lengths = np.maximum(lengths, 1) if fill is not None else lengths

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, i: int) -> np.ndarray:
        ids = self.store.row(int(self.rows[i]))[:self.max_len or None]
        if self.table is not None:
            ids = self.table[ids]
        if not len(ids) and self.fill is not None:
            return np.array([self.fill], dtype=np.int32)
        return np.asarray(ids, dtype=np.int32)
