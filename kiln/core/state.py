"""Checkpoints: atomic writes, safe loads, RNG state, and weight loading that explains mismatches."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from kiln.core.errors import CorruptCheckpoint, KilnError, first_line, write_failed
from kiln.core.upgrade import FORMAT_VERSION, upgrade_checkpoint


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every RNG and set the numerics for this run. Both directions are set explicitly: a later run in the
    same process (a tune trial) must not inherit an earlier run's deterministic mode, or its lack."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled() or "torch._inductor.config" in sys.modules:
        # torch's setter also imports the compiler's config (2.7 s on a 2-core CPU): only when it changes
        # something, or that config is loaded already and must agree.
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    if torch.cuda.is_available():
        # Autotuned kernels vary between runs in the last bits; TF32 matmuls (Ampere+) make fp32 runs ~2x faster.
        torch.backends.cudnn.benchmark = not deterministic
        torch.set_float32_matmul_precision("highest" if deterministic else "high")


def rng_state() -> dict[str, Any]:
    """Every global RNG as plain data that `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write through a temp file in the same folder, fsync, then rename: a crash leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode any new file would
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:  # disk full, read-only: the previous file is untouched
        Path(tmp).unlink(missing_ok=True)
        raise write_failed(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically, with a checksum of everything in it: torch.load does not notice a flipped byte in tensor data.
    A `.dcp` path is a sharded checkpoint: every rank calls this together, its model and optimizer its shards."""
    from kiln.core import sharded

    payload = {"format": FORMAT_VERSION, **payload}
    if Path(path).suffix == sharded.SUFFIX:
        sharded.save(Path(path), payload)
        return
    payload["sha256"] = payload_digest(payload)
    atomic_write(Path(path), lambda f: torch.save(payload, f))


def payload_digest(payload: dict[str, Any]) -> str:
    """sha256 over every value in the checkpoint (tensor bytes, and the repr of plain values), in order."""
    digest = hashlib.sha256()

    def visit(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            digest.update(f"{obj.dtype}{tuple(obj.shape)}".encode())
            digest.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for key, value in obj.items():
                digest.update(repr(key).encode())
                visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)
        else:
            digest.update(repr(obj).encode())

    visit({k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


def copy_checkpoint(src: Path, dst: Path) -> None:
    """A file, or a sharded checkpoint's folder (`dst` then names the folder)."""
    if Path(src).is_dir():
        from kiln.core import sharded

        sharded.copy(Path(src), Path(dst))
        return
    atomic_write(Path(dst), lambda f: shutil.copyfileobj(open(src, "rb"), f))


def remove_checkpoint(path: Path) -> None:
    """A checkpoint file or sharded folder, if it is there."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a kiln checkpoint with `weights_only=True` (a checkpoint cannot run code); a sharded one (a folder)
    consolidated into the same full state."""
    path = Path(path)
    if path.is_dir():
        from kiln.core import sharded

        return _checked_format(sharded.read(path), path)
    if not path.is_file():
        raise KilnError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 — torch raises several types for corrupt or foreign files
        raise KilnError(f"cannot load checkpoint {path}: {first_line(e)} — the file is corrupt, "
                        "truncated, or not a kiln checkpoint") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise KilnError(f"{path} is not a kiln checkpoint (no 'model' entry); for a plain state_dict "
                        "use it as pretrained weights instead")
    if "sha256" in payload and payload_digest(payload) != payload["sha256"]:  # older checkpoints have none
        others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
        raise CorruptCheckpoint(f"checkpoint corrupted: {path} does not match the checksum stored when it was "
                                f"written (a damaged disk or copy); the other checkpoints here: "
                                f"{', '.join(others) or 'none'}")
    return _checked_format(payload, path)


def _checked_format(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    if payload.get("format", 1) > FORMAT_VERSION:
        raise KilnError(f"{path} was written by a newer kiln (checkpoint format {payload['format']}; this kiln "
                        f"reads up to {FORMAT_VERSION}): upgrade kiln to use it")
    return upgrade_checkpoint(payload)


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path | str) -> None:
    """Strictly load `weights`; on mismatch, say exactly which tensors differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing from the checkpoint", missing), ("not in the model", unexpected),
                             ("with different shapes", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{len(items)} tensors {title}: {shown}")
        raise KilnError(f"checkpoint {source} does not match the model (was it trained with another "
                        f"model or model.args?):\n  " + "\n  ".join(parts))
    tensor = sys.modules.get("torch.distributed.tensor")  # loaded wherever a model was sharded (not imported here)
    if tensor is not None and any(isinstance(p, tensor.DTensor) for p in model.parameters()):  # FSDP: keep shards
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, dict[str, Any](weights), options=StateDictOptions(full_state_dict=True))
        return
    model.load_state_dict(weights)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP/compile wrappers, so saved weights carry no 'module.'/'_orig_mod.' prefix."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's wrapper
            model = inner
        else:
            return model
