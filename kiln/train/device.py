"""Device and numeric precision, resolved from the trainer config."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch

from kiln.errors import KilnError

log = logging.getLogger("kiln")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> cuda (this process's LOCAL_RANK GPU), else mps, else cpu. An unavailable device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KilnError(f"trainer.device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KilnError(f"trainer.device={name} but CUDA is not available on this machine; use trainer.device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise KilnError(f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise KilnError("trainer.device=mps but MPS is not available on this machine; use trainer.device=auto")
    return device


def resolve_precision(setting: str, device: torch.device) -> str:
    """'32', 'bf16' or '16' for this device; settings that cannot apply here fall back with a warning."""
    if setting == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    if setting == "16" and device.type != "cuda":
        log.warning("trainer.precision=16 needs CUDA; training in 32-bit on %s", device.type)
        return "32"
    if setting == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU does not support bf16; training in 32-bit")
        return "32"
    return setting


def autocast(device: torch.device, precision: str):
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
