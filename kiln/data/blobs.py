"""Images that are not files of their own: bytes in a table column (a Hugging Face dataset, Parquet) or a byte
range of a tar shard. They stand where an image file's path stands (kiln.data.image_store decodes either), so
every image source shares one decoder, one cache and one set of bad-image messages."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


@dataclass(frozen=True)
class ColumnImage:
    """Row `row` of an image column: binary values, or an `Image` feature's {bytes, path} (a path relative to
    `root` when the bytes are not stored)."""

    column: Any  # a pyarrow (Chunked)Array
    row: int
    dataset: str  # what identifies the table's contents (its fingerprint, or its files' sizes and times)
    root: Path | None = None

    def read_bytes(self) -> bytes:
        value = self.column[self.row].as_py()
        if isinstance(value, dict):
            if value.get("bytes") is None and value.get("path"):
                return ((self.root or Path()) / value["path"]).read_bytes()
            value = value.get("bytes")
        if value is None:
            raise OSError("the image cell is empty")
        return bytes(value)

    def identity(self) -> str:
        return f"{self.dataset}\0{self.row}"

    def __str__(self) -> str:
        return f"{self.dataset.split(chr(0))[0]}, row {self.row}"


@dataclass(frozen=True)
class ShardMember:
    """A file inside a tar shard: `size` bytes at `offset` of the shard at `url`."""

    url: str
    name: str
    offset: int
    size: int
    shard: str  # the shard's identity (its size and modification time or ETag)

    def read_bytes(self) -> bytes:
        from kiln.core.storage import read_range

        data = read_range(self.url, self.offset, self.size)
        if len(data) != self.size:
            raise OSError(f"the shard ends inside this file ({len(data)} of {self.size} bytes): truncated")
        return data

    def identity(self) -> str:
        return f"{self.shard}\0{self.name}"

    def __str__(self) -> str:
        return f"{self.url}:{self.name}"


@dataclass(frozen=True)
class RemoteFile:
    """An image at a URL (listed by a CSV file in an object store), read whole through fsspec."""

    url: str
    listed_in: str  # the identity of the CSV listing it: the image cache follows the listing

    def read_bytes(self) -> bytes:
        from kiln.core.storage import read_all

        return read_all(self.url)

    def identity(self) -> str:
        return f"{self.listed_in}\0{self.url}"

    def __str__(self) -> str:
        return self.url


def opened(image: Path | Any) -> Path | BinaryIO:
    """What PIL opens for an image file's path or an image held elsewhere (its bytes)."""
    if isinstance(image, (str, Path)):
        return image  # type: ignore[return-value]
    return io.BytesIO(image.read_bytes())


def identity(image: Path | Any) -> str:
    """What changes when the image changes: a file's path, size and time; a held image's own identity."""
    import os

    if isinstance(image, (str, Path)):
        st = os.stat(image)
        return f"{os.path.abspath(image)}\0{st.st_size}\0{st.st_mtime_ns}"
    return image.identity()
