"""kiln data pack: any kiln image source (an image folder or CSV, a Hugging Face dataset or Parquet files, shards)
written as WebDataset tar shards (webdataset's ShardWriter) — each image's original bytes under a numbered key with
its class as `.cls`, one set of shards per split, and classes.txt beside them — so data.name: webdataset reads it."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.config import Config
from kiln.core.errors import KilnError

log = logging.getLogger("kiln")

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
SIGNATURES = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"), (b"II*\x00", "tif"),
              (b"MM\x00*", "tif"))


@dataclass
class Packed:
    """What was written: split -> its shard files, the class names, and the data.urls that read them."""

    dest: Path
    shards: dict[str, list[Path]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)

    def urls(self) -> dict[str, str]:
        """split -> a brace pattern naming its shards (data.urls)."""
        out = {}
        for split, files in self.shards.items():
            last = len(files) - 1
            out[split] = str(self.dest / f"{split}-{{000000..{last:06d}}}.tar") if last else str(files[0])
        return out


    def override(self) -> str:
        """data.urls=... as the command line takes it (each pattern quoted: its braces are not YAML's)."""
        urls = self.urls()
        if set(urls) == {"all"}:
            return f"data.urls={json.dumps(urls['all'])}"
        return "data.urls={" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in urls.items()) + "}"


def parse_size(text: str | int) -> int:
    """'1GB', '500MB', '64KiB', 100000 -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*", str(text).lower())
    if not m:
        raise KilnError(f"--shard-size {text!r}: give a size such as 1GB, 500MB or 64MiB")
    return max(1, int(float(m[1]) * UNITS[m[2] or ""]))


def pack(source: Path, dest: Path, overrides: list[str] | tuple[str, ...] = (), shard_size: str | int = "1GB",
         seed: int = 0) -> Packed:
    """Write the source's samples to `dest` as shards (`train-000000.tar`, ...; training samples in a seeded
    order, so every shard holds a mix of classes). `source`: a config (its data section), or a folder (a saved
    Hugging Face dataset or Parquet files, train.csv of image paths, or class folders)."""
    from kiln.tasks import task_class

    cfg = source_config(source, overrides)
    if not task_class(cfg.task.name).class_per_sample:
        raise KilnError(f"kiln data pack writes one class per sample (.cls); task.name={cfg.task.name} has other "
                        "targets")
    spec = _spec(cfg)
    dest = Path(dest)
    if dest.is_dir() and any(dest.glob("*.tar")):
        raise KilnError(f"{dest} already holds shards; pack into an empty folder (nothing there was changed)")
    found = spec.scan(cfg.data, cfg.task.name)
    dest.mkdir(parents=True, exist_ok=True)
    packed = Packed(dest, class_names=list(found.class_names))
    size = parse_size(shard_size)
    for split, files in found.files.items():
        order = _order(len(files.paths), seed, shuffle=split in ("train", "all"))
        packed.shards[split] = _write(dest, split, [(files.paths[i], files.labels[i]) for i in order], size)
        packed.samples[split] = len(order)
    (dest / "classes.txt").write_text("".join(f"{name}\n" for name in packed.class_names), encoding="utf-8")
    return packed


def source_config(source: Path, overrides: list[str] | tuple[str, ...]) -> Config:
    """A config's settings, or for a folder the data source it holds (then overrides may set data.* keys)."""
    from kiln.config.files import resolve_config

    source = Path(source)
    if source.is_file():
        return resolve_config(source, *overrides)
    if not source.is_dir():
        raise KilnError(f"{source}: no such config file or folder")
    from kiln.data.registry import source_in

    return resolve_config({"data": {"name": source_in(source), "root": str(source)}}, *overrides)


def _spec(cfg: Config) -> Any:
    from kiln.data.registry import get_dataset

    spec = get_dataset(cfg.data.name) if ":" not in cfg.data.name else None
    if spec is None or not hasattr(spec, "scan"):
        raise KilnError(f"data.name={cfg.data.name}: kiln data pack reads image sources (image_folder, image_csv, "
                        "hf_dataset, webdataset)")
    return spec


def _order(n: int, seed: int, shuffle: bool) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).permutation(n).tolist() if shuffle else list(range(n))


def _write(dest: Path, split: str, samples: list[tuple[Any, int]], max_bytes: int) -> list[Path]:
    """One split's samples into shards of at most `max_bytes` (at least one sample each), written to a
    temporary name and renamed when complete."""
    import webdataset as wds

    pattern = str(dest / f".{split}-%06d.tar.part")
    with wds.ShardWriter(pattern, maxsize=max_bytes, maxcount=10**9, verbose=0) as sink:
        for key, (image, label) in enumerate(samples):
            data = image.read_bytes()
            sink.write({"__key__": f"{key:08d}", _extension(image, data): data, "cls": str(int(label)).encode()})
    written = sorted(dest.glob(f".{split}-*.tar.part"))
    out = []
    for part in written:
        final = dest / part.name[1:].removesuffix(".part")
        part.replace(final)
        out.append(final)
    log.info("%s: %d samples in %d shards", split, len(samples), len(out))
    return out


def _extension(image: Any, data: bytes) -> str:
    """The image's format as its file extension (a file's own; bytes by their signature)."""
    if isinstance(image, Path) and image.suffix:
        return image.suffix.lower().lstrip(".").replace("jpeg", "jpg")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for sig, ext in SIGNATURES if data.startswith(sig)), "png")
