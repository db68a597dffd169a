"""Sharded checkpoints (`trainer.strategy: fsdp`): a folder instead of a file, every rank writing its own shards.

    checkpoints/last.dcp/
      __0_0.distcp  __1_0.distcp ...  .metadata   model and optimizer state, through torch.distributed.checkpoint
      state.pt                                    everything else (loop, schedule, callbacks, RNG, config), rank 0
      manifest.json                               the sha256 of every file above, written last

A folder is written as `.<name>.partial` and swapped in when every rank is done, so a crash mid-write leaves the
previous checkpoint in place. On one process (`kiln test`, `predict`, `export`, a resume without FSDP) the shards
are consolidated into the full state, the same dict a `.pt` checkpoint holds; under FSDP they are loaded straight
into each rank's shards, re-laid by torch when the number of processes changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from kiln.core import dist
from kiln.core.errors import CorruptCheckpoint, KilnError, first_line, write_failed

SUFFIX = ".dcp"
# What torch.distributed.checkpoint writes (raw_model: the weights themselves under trainer.ema, whose average is
# the model); the rest is state.pt.
SHARDED_KEYS = ("model", "raw_model", "optimizer")
STATE, MANIFEST = "state.pt", "manifest.json"


def save(path: Path, payload: dict[str, Any]) -> None:
    """Every rank, together (through kiln.core.state.save_checkpoint): `payload`'s model and optimizer hold this
    rank's shards (torch's sharded state dicts), the rest is rank 0's (gathered already). Rank 0 writes the rest
    and the manifest, then swaps the folder in."""
    import torch
    import torch.distributed.checkpoint as dcp

    proc = dist.current()
    partial = path.with_name(f".{path.name}.partial")
    if proc.is_main:
        shutil.rmtree(partial, ignore_errors=True)  # a crash's leftovers
    dist.barrier()
    try:
        dcp.save({k: payload[k] for k in SHARDED_KEYS if k in payload}, storage_writer=dcp.FileSystemWriter(partial))
    except OSError as e:
        raise write_failed(path, e) from None
    # Each rank hashes the files it wrote (torch names them __<rank>_<n>), rank 0 the rest.
    digests: dict[str, str] = {}
    for own in dist.gather(_digests(partial, f"__{proc.rank}_")):
        digests.update(own)
    if proc.is_main:
        try:
            torch.save({k: v for k, v in payload.items() if k not in SHARDED_KEYS}, partial / STATE)
            digests.update({name: d for name, d in _digests(partial, "").items() if name not in digests})
            _write_manifest(partial, digests)
            _swap(partial, path)
        except OSError as e:
            shutil.rmtree(partial, ignore_errors=True)
            raise write_failed(path, e) from None
    dist.barrier()  # nobody reads or copies the folder before it is in place


def _digests(folder: Path, prefix: str) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name.startswith(prefix)
            and p.name != MANIFEST}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(folder: Path, files: dict[str, str]) -> None:
    text = json.dumps({"files": dict(sorted(files.items())), "sha256": _manifest_digest(files)}, indent=1)
    with open(folder / MANIFEST, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _manifest_digest(files: dict[str, str]) -> str:
    """One checksum for the whole checkpoint (what a `.pt` checkpoint's sha256 is: test predictions name it)."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _swap(new: Path, path: Path) -> None:
    """`new` becomes `path`: the old folder is moved aside first (a folder cannot be replaced in one rename), and a
    crash between the two renames leaves it at `.<name>.old`, where `on_disk` finds it (the next save, complete,
    replaces it)."""
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    os.rename(new, path)
    shutil.rmtree(old, ignore_errors=True)


def on_disk(path: Path) -> Path | None:
    """The folder `path`, or the previous one a crash left moved aside mid-swap; None when there is neither.
    Readers never rename: a save may be swapping the folder at that moment."""
    if path.exists():
        return path
    old = path.with_name(f".{path.name}.old")
    return old if old.is_dir() else None


def copy(src: Path, dst: Path) -> None:
    """best/top-k from last: hard links where the file system has them (the files are never written again: every
    save is a new folder), swapped in like a save."""
    partial = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(src, partial, copy_function=_link_or_copy)
        _swap(partial, dst)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise write_failed(dst, e) from None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def verify(path: Path) -> str:
    """The checkpoint's checksum, after checking every file against the manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files: dict[str, str] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CorruptCheckpoint(f"{path} is not a complete sharded checkpoint (no readable {MANIFEST}: its "
                                f"writing did not finish, or the folder was damaged)") from None
    bad = [name for name, digest in files.items() if not (path / name).is_file() or _sha256(path / name) != digest]
    if bad or manifest.get("sha256") != _manifest_digest(files):
        raise CorruptCheckpoint(f"checkpoint corrupted: {', '.join(bad) or MANIFEST} in {path} do not match the "
                                f"checksums stored when it was written (a damaged disk or copy)")
    return manifest["sha256"]


def read_state(path: Path) -> dict[str, Any]:
    """Everything but the model and optimizer (verified), with the checkpoint's checksum."""
    import torch

    checksum = verify(path)
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — torch raises several types for a corrupt file
        raise KilnError(f"cannot load {path / STATE}: {first_line(e)}") from None
    return {**state, "sha256": checksum}


def read(path: Path) -> dict[str, Any]:
    """The full checkpoint on one process: the shards consolidated (parameters by name, optimizer state keyed by
    parameter name), as a `.pt` checkpoint holds it."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state = read_state(path)
    shards: dict[str, Any] = {}
    # torch's own dcp_to_torch_save does the same: an empty state dict filled from the saved metadata, no process
    # group needed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _load_state_dict(shards, storage_reader=FileSystemReader(path), planner=_EmptyStateDictLoadPlanner(),
                         no_dist=True)
    return {**state, **shards}


def load_into(path: Path, shards: dict[str, Any]) -> None:
    """Every rank, together: fill `shards` (this rank's sharded model and optimizer state dicts, as torch's
    get_state_dict gives them) from the checkpoint, whatever number of processes wrote it."""
    import torch.distributed.checkpoint as dcp

    dcp.load(shards, storage_reader=dcp.FileSystemReader(path))
