"""WebDataset tar shards (`data.name: webdataset`): `data.urls` names them with a brace pattern, local or through
fsspec (s3://, gs://, https://). A sample is the files of one key (`000017.png`, `000017.cls`): an image
(.jpg/.jpeg/.png/.webp/...) and its target (.cls: a class number or name; .txt: a class name; .json: {"label": ...}).

Each shard is indexed once — where each sample's image lies in it (offset, size) and its target — and the index is
cached under $KILN_CACHE/shards, keyed by the shard's URL, size and modification time (ETag). From then on the epoch
length is known, images are read by byte range (decoded through the image store and its cache, as image files are)
and the training order is kiln's seeded shard order plus a seeded shuffle buffer (kiln.data.loaders.
GroupedEpochSampler): each rank reads its own shards, and a resumed run starts at the very sample it stopped at
without reading what came before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.image_files import IMAGE_EXTENSIONS, Found, ImageFiles

log = logging.getLogger("kiln")

TARGET_EXTENSIONS = (".cls", ".txt", ".json")
INDEX_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """One key of a shard: its image member (name, offset, size) and its target's text ('' when it has none)."""

    key: str
    image: str
    offset: int
    size: int
    target: str


def scan_shards(cfg: DataConfig, task: str) -> Found:
    """The samples of every split's shards (`all` for one pattern kiln splits), with their shard as the group
    they are read in."""
    from kiln.tasks import task_class

    if cfg.urls is None:
        raise KilnError('data.name=webdataset needs data.urls: the shards, e.g. "shards/train-{000000..000009}.tar" '
                        "(or {train: PATTERN, test: PATTERN})")
    patterns: dict[str, str] = {"all": cfg.urls} if isinstance(cfg.urls, str) else {str(k): v for k, v in cfg.urls.items()}
    if "all" not in patterns and "train" not in patterns:
        raise KilnError("data.urls names no train shards; give {train: PATTERN, ...} or one pattern for all")
    indexed = {pool: _indexed(pattern, cfg.on_bad_row) for pool, pattern in patterns.items()}
    first = indexed.get("train") or indexed["all"]
    class_names = cfg.class_names or _classes_file(patterns.get("train") or patterns["all"]) or \
        task_class(task).target_names(None, [s.target for _, samples in first for s in samples if s.target],
                                      ["target"], cfg.label_separator, "the shards' targets")
    files = {pool: _files(shards, class_names, cfg, task) for pool, shards in indexed.items()}
    return Found(files, class_names, f"{sum(len(s) for s in indexed.values())} tar shards", task_class(task).noun)


def _indexed(pattern: str, on_bad_row: str) -> list[tuple[str, list[Sample]]]:
    from kiln.core.storage import exists, expand

    urls = expand(pattern)
    if not urls:
        raise KilnError(f"data.urls: {pattern} matches no shard; check the pattern")
    missing = [u for u in urls if not exists(u)]
    if missing:
        raise KilnError(f"data.urls: {len(missing)} of the {len(urls)} shards {pattern} names do not exist "
                        f"({', '.join(missing[:3])}); check the pattern and its range")
    return [(url, shard_index(url, on_bad_row)) for url in urls]


def _classes_file(pattern: str) -> list[str] | None:
    """classes.txt beside the shards (kiln data pack writes it): one class name per line, in label order."""
    from kiln.core.storage import exists, expand, open_file

    first = expand(pattern)[0]
    listing = first.rsplit("/", 1)[0] + "/classes.txt" if "/" in first else "classes.txt"
    if not exists(listing):
        return None
    with open_file(listing) as f:
        names = [line.strip() for line in f.read().decode("utf-8").splitlines()]
    return [n for n in names if n and not n.startswith("#")] or None


def _files(shards: list[tuple[str, list[Sample]]], class_names: list[str], cfg: DataConfig, task: str) -> ImageFiles:
    """Every sample with an image and a usable target, grouped by its shard."""
    from kiln.core.storage import identity
    from kiln.data.blobs import ShardMember
    from kiln.tasks import task_class

    out, skipped, first = ImageFiles(), 0, ""
    for number, (url, samples) in enumerate(shards):
        shard = identity(url)
        for s in samples:
            target, problem = task_class(task).parse_cells([s.target], class_names, cfg.label_separator) \
                if s.target else (None, "no target (.cls, .txt or .json)")
            problem = problem or ("" if s.image else f"no image ({', '.join(IMAGE_EXTENSIONS)})")
            if problem:
                if cfg.on_bad_row == "error":
                    raise KilnError(f"{url}, sample {s.key!r}: {problem}. Fix the shard, or set data.on_bad_row=skip")
                skipped, first = skipped + 1, first or f"{url}, sample {s.key!r}: {problem}"
                continue
            out.add(ShardMember(url, s.image, s.offset, s.size, shard), target, f"{url}:{s.image}")  # type: ignore[arg-type]
            out.groups.append(number)
    if skipped:
        log.warning("skipped %d samples of the shards (first: %s)", skipped, first)
    if not out.paths:
        raise KilnError(f"the shards {shards[0][0]}... hold no usable samples")
    return out


def shard_index(url: str, on_bad_row: str = "error") -> list[Sample]:
    """The samples of one shard, from the index cache when the shard is unchanged."""
    from kiln.core.storage import identity

    key = hashlib.sha256(json.dumps([INDEX_VERSION, identity(url)]).encode()).hexdigest()[:24]
    path = cache_dir() / f"{key}.json"
    if path.is_file():
        try:
            return [Sample(*row) for row in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            log.warning("ignoring an unreadable shard index %s", path)
    samples, complete = _read_index(url, on_bad_row)
    if complete:  # a truncated shard's partial index is not kept: the next run says so again
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([[s.key, s.image, s.offset, s.size, s.target] for s in samples]))
        tmp.replace(path)
    return samples


def _read_index(url: str, on_bad_row: str) -> tuple[list[Sample], bool]:
    """Walk the shard's tar headers (the images' bytes are skipped, not read) and group its files by key."""
    from kiln.core.storage import failures, file_size, open_file

    found: dict[str, dict[str, Any]] = {}
    complete = True
    size = file_size(url)
    with failures(url), open_file(url) as f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    if member.offset_data + member.size > size:
                        raise tarfile.ReadError(f"{member.name} runs past the end of the file")
                    _add(found, member, tar)
        except (tarfile.ReadError, EOFError) as e:
            problem = f"{url} is truncated or not a tar file ({e})"
            if on_bad_row == "error" or not found:
                raise KilnError(f"{problem}; write it again (kiln data pack), or set data.on_bad_row=skip to use the "
                                "samples before the damage") from None
            log.warning("%s: using the %d samples before the damage", problem, len(found))
            complete = False
    return [Sample(key, v.get("image", ""), v.get("offset", 0), v.get("size", 0), v.get("target", ""))
            for key, v in found.items()], complete


def _add(found: dict[str, dict[str, Any]], member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
    """One tar member into its sample (key = the name up to the first dot of its last part, as WebDataset reads)."""
    folder, _, base = member.name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or base.startswith("."):
        return
    key = f"{folder}/{stem}" if folder else stem
    entry = found.setdefault(key, {})
    ext = "." + ext.lower()
    if ext in IMAGE_EXTENSIONS and "image" not in entry:
        entry.update(image=member.name, offset=member.offset_data, size=member.size)
    elif ext in TARGET_EXTENSIONS and "target" not in entry:
        data = tar.extractfile(member)
        entry["target"] = _target(data.read() if data else b"", ext)


def _target(raw: bytes, ext: str) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    if ext != ".json":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return ""
    value = value.get("label", value.get("cls", "")) if isinstance(value, dict) else value
    return "" if value is None else str(value)


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CACHE") or Path.home() / ".cache" / "kiln").expanduser() / "shards"
