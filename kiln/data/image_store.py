"""Decoding image files, once: every image of a file list (or images held elsewhere: kiln.data.blobs) decoded,
converted to one mode and resized into a uint8 store (N, C, H, W) in $KILN_CACHE, memory-mapped and reused while
the files are unchanged.

One decoder serves the store, decoding per sample (`data.cache: off`) and `kiln predict`, so every path sees the
same pixels: EXIF orientation applied, transparency composited on white, the shorter side resized to cover the
stored size (bilinear, antialiased), then the centre cut out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from kiln.core.errors import KilnError
from kiln.data.blobs import identity, opened

log = logging.getLogger("kiln")

DECODER_VERSION = 1  # part of every store's key: a change to decode() must not reuse stores made by the old one
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CACHE") or Path.home() / ".cache" / "kiln").expanduser() / "images"


def probe(path: Path) -> tuple[int, int, bool]:
    """(width, height, grayscale) from the file's header, without decoding its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(opened(path)) as img:
            return img.width, img.height, img.mode in GRAY_MODES
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise BadImage(path, e) from None


class BadImage(Exception):
    """A file that is not a readable image (unknown format, truncated, corrupt)."""

    def __init__(self, path: Path, error: Exception):
        super().__init__(f"{path}: {error}")
        self.path, self.error = path, error


def decode(path: Path, channels: int, size: tuple[int, int], crop: bool = True) -> np.ndarray:
    """The image at `path` as uint8 (channels, H, W) of `size`: its shorter side resized to cover `size`, then the
    centre (`crop=False`: the whole image stretched to `size`, so a per-pixel output maps back by a plain resize).
    Raises BadImage."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(opened(path)) as img:
            if img.format == "JPEG":  # decode at a reduced DCT scale when the target is much smaller: 2-4x faster
                scale = max(size[1] / img.width, size[0] / img.height)
                img.draft("RGB" if channels == 3 else "L", (int(img.width * scale) + 1, int(img.height * scale) + 1))
            img = ImageOps.exif_transpose(img)
            img = _to_mode(img, channels)
            # The centre box with the target's aspect ratio, resized to the target in one step (the same as
            # resizing the shorter side to cover it, then cutting out the centre).
            scale = max(size[1] / img.width, size[0] / img.height)
            box_w, box_h = min(img.width, size[1] / scale), min(img.height, size[0] / scale)  # float rounding
            if not crop:
                box_w, box_h = img.width, img.height
            left, top = (img.width - box_w) / 2, (img.height - box_h) / 2
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h))
            array = np.array(img, dtype=np.uint8)  # a writable copy: tensors are made from it
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImage(path, e) from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _to_mode(img, channels: int):
    from PIL import Image

    mode = "RGB" if channels == 3 else "L"
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit: scale to 8 bits (convert() would clip)
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "F" and array.max() > 255 else max(float(array.max()), 255.0)
        img = Image.fromarray((array * (255.0 / top)).round().clip(0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img if img.mode == mode else img.convert(mode)


class DecodedFiles:
    """Image files decoded when asked for (data.cache: off): `fetch` decodes a batch, e.g. in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], channels: int, size: tuple[int, int]):
        self.paths, self.channels, self.size = list(paths), channels, size

    def __len__(self) -> int:
        return len(self.paths)

    def fetch(self, indices: Sequence[int]) -> torch.Tensor:
        try:
            return torch.from_numpy(np.stack([decode(self.paths[i], self.channels, self.size) for i in indices]))
        except BadImage as e:
            raise KilnError(f"cannot decode image {e.path} ({e.error}); remove or replace the file") from None


class ImageStore:
    """A file list decoded once into a memory-mapped uint8 array; `fetch` reads batches of rows from it."""

    def __init__(self, images: torch.Tensor, bad: list[int]):
        self.images, self.bad = images, bad  # (N, C, H, W) uint8; rows of files that could not be decoded

    def __len__(self) -> int:
        return len(self.images)

    def fetch(self, indices: Sequence[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]

    @staticmethod
    def key(paths: Sequence[Path], channels: int, size: tuple[int, int]) -> str:
        """Changes when a file is added, removed, replaced or touched, or when the decode settings change."""
        h = hashlib.sha256(json.dumps([DECODER_VERSION, channels, list(size)]).encode())
        for p in paths:
            h.update(f"\0{identity(p)}".encode())
        return h.hexdigest()[:24]

    @classmethod
    def open_or_build(cls, paths: Sequence[Path], channels: int, size: tuple[int, int], workers: int) -> ImageStore:
        """The store of `paths`, built now unless an up-to-date one exists. Processes that ask at once (DDP ranks,
        parallel tune trials) take turns: one builds, the others then find it."""
        import fcntl

        folder = cache_dir()
        key = cls.key(paths, channels, size)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return cls._open_or_build(folder, key, paths, channels, size, workers)

    @classmethod
    def _open_or_build(cls, folder: Path, key: str, paths: Sequence[Path], channels: int, size: tuple[int, int],
                       workers: int) -> ImageStore:
        data, meta_file = folder / f"{key}.u8", folder / f"{key}.json"
        shape = (len(paths), channels, *size)
        if meta_file.is_file() and data.is_file() and data.stat().st_size == int(np.prod(shape)):
            meta = json.loads(meta_file.read_text())
            log.info("image cache: reusing %s (%d images, %dx%dx%d)", data, len(paths), channels, *size)
            return cls(_memmap(data, shape), meta["bad"])
        log.info("image cache: decoding %d images once into %s (%.0f MiB; later runs reuse it while the files are "
                 "unchanged)", len(paths), data, np.prod(shape) / 2**20)
        started = time.perf_counter()
        part = data.with_suffix(f".part{os.getpid()}")
        out = np.memmap(part, dtype=np.uint8, mode="w+", shape=shape)
        bad = _decode_into(out, paths, channels, size, workers)
        out.flush()
        del out
        part.replace(data)  # complete stores only: a killed build leaves a .part file, never a half-filled store
        meta_file.write_text(json.dumps({"files": len(paths), "shape": list(shape), "bad": sorted(bad),
                                         "first": str(paths[0]) if paths else ""}))
        seconds = time.perf_counter() - started
        log.info("image cache: decoded %d images in %.1f s (%.0f images/s)", len(paths), seconds,
                 len(paths) / max(seconds, 1e-9))
        _remove_stale(folder, paths, keep=key)
        return cls(_memmap(data, shape), sorted(bad))


def _memmap(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    # copy-on-write: tensors made from it are writable in memory while the file stays as built
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=shape))


def _decode_into(out: np.memmap, paths: Sequence[Path], channels: int, size: tuple[int, int],
                 workers: int) -> dict[int, str]:
    """Decode every file into its row of the store `out`; returns {row: problem} for files that could not be
    decoded. Large lists are split over worker processes that write straight into the memory-mapped file (small
    images are bound by Python's per-image overhead, which threads would serialise on the GIL)."""
    chunks = [range(start, min(start + 256, len(paths))) for start in range(0, len(paths), 256)]
    if workers <= 1 or len(chunks) < 2 or "fork" not in mp.get_all_start_methods():
        return _decode_chunk(out, paths, channels, size, range(len(paths)))
    out.flush()
    bad: dict[int, str] = {}
    ctx = mp.get_context("fork")  # children inherit the file list; nothing is pickled but row ranges
    global _FORKED
    _FORKED = (str(out.filename), out.shape, list(paths), channels, size)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
            for result in pool.map(_decode_in_child, chunks):
                bad.update(result)
    finally:
        _FORKED = None
    return bad


_FORKED: tuple | None = None  # what forked decoders read: (store file, shape, paths, channels, size)


def _decode_in_child(rows: range) -> dict[int, str]:
    assert _FORKED is not None
    filename, shape, paths, channels, size = _FORKED
    out = np.memmap(filename, dtype=np.uint8, mode="r+", shape=shape)
    bad = _decode_chunk(out, paths, channels, size, rows)
    out.flush()
    return bad


def _decode_chunk(out: np.ndarray, paths: Sequence[Path], channels: int, size: tuple[int, int],
                  rows: range) -> dict[int, str]:
    bad = {}
    for i in rows:
        try:
            out[i] = decode(paths[i], channels, size)
        except BadImage as e:
            bad[i] = str(e.error)
    return bad


def _remove_stale(folder: Path, paths: Sequence[Path], keep: str) -> None:
    """Stores built earlier for the same first file (an older version of this dataset) are deleted: the cache
    holds one store per dataset, not one per edit."""
    first = str(paths[0]) if paths else ""
    for meta_file in folder.glob("*.json"):
        if meta_file.stem == keep:
            continue
        try:
            if json.loads(meta_file.read_text()).get("first") == first:
                meta_file.with_suffix(".u8").unlink(missing_ok=True)
                meta_file.with_suffix(".lock").unlink(missing_ok=True)
                meta_file.unlink(missing_ok=True)
        except (OSError, ValueError):
            continue
