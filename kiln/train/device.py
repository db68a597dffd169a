"""Device and numeric precision, resolved from the trainer config."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from kiln.core.devices import device_type
from kiln.core.errors import KilnError

log = logging.getLogger("kiln")


def resolve_backend(setting: str, device: torch.device) -> str:
    """The process-group backend: auto = nccl on CUDA, gloo elsewhere."""
    if setting == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if setting == "nccl" and device.type != "cuda":
        raise KilnError(f"trainer.backend=nccl needs CUDA devices; this run trains on {device.type}: use "
                        "trainer.backend=gloo (or auto)")
    return setting


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1, backend: str = "auto") -> torch.device:
    """auto -> cuda, else mps, else cpu. Under DDP (world_size > 1: the processes on this machine, which share
    its GPUs) each process takes cuda:LOCAL_RANK.
    An unavailable device, or a GPU layout DDP cannot use, is an error before any process group starts."""
    if name == "auto":
        name = device_type(name)  # the choice the config's device profile (on_device) was picked by
        if name != "cuda":
            return torch.device(name)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KilnError(f"trainer.device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        return _cuda_device(device, local_rank, world_size, backend)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise KilnError("trainer.device=mps but MPS is not available on this machine; use trainer.device=auto")
    return device


def _cuda_device(device: torch.device, local_rank: int, world_size: int, backend: str) -> torch.device:
    if not torch.cuda.is_available():
        raise KilnError(f"trainer.device={device} but CUDA is not available on this machine; use trainer.device=auto")
    count = torch.cuda.device_count()
    if device.index is not None:
        if world_size > 1:
            raise KilnError(f"trainer.device={device} names one GPU, but {world_size} processes would all train "
                            "on it; use trainer.device=cuda (each process takes the GPU of its LOCAL_RANK), and "
                            "CUDA_VISIBLE_DEVICES to choose which GPUs")
        if device.index >= count:
            raise KilnError(f"trainer.device={device} but only {count} CUDA device(s) exist")
        return device
    if world_size > 1 and world_size > count and resolve_backend(backend, device) == "nccl":
        raise KilnError(f"{world_size} processes but {count} visible GPU(s): NCCL needs one GPU per process. "
                        f"Use --nproc {count}, or trainer.backend=gloo to let processes share GPUs (slower)")
    return torch.device("cuda", local_rank % count if world_size > 1 else (torch.cuda.current_device()))


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware (Ampere and newer); older GPUs (T4, V100) only emulate it, slowly."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(setting: str, device: torch.device) -> str:
    """'32', 'bf16' or '16' for this device; settings that cannot apply here fall back with a warning.
    auto: bf16 where the training GPU has it natively, else fp16 with the gradient scaler; 32 off CUDA."""
    if setting == "auto":
        if device.type != "cuda":
            return "32"
        return "bf16" if native_bf16(device) else "16"
    if setting == "16" and device.type != "cuda":
        log.warning("trainer.precision=16 needs CUDA; training in 32-bit on %s", device.type)
        return "32"
    if setting == "bf16" and device.type == "cuda" and not native_bf16(device):
        log.warning("%s has no native bf16 (it would be emulated, slowly); training in fp16 with a gradient "
                    "scaler instead (trainer.precision=16)", torch.cuda.get_device_name(device))
        return "16"
    return setting


def use_channels_last(setting: bool | str, device: torch.device, model_name: str) -> bool:
    """trainer.channels_last: auto turns NHWC conv activations on for kiln's own models and the libraries'
    (torchvision, timm) on CPU and CUDA, where they are measured to be faster. A model of the user's
    (`package.module:Class`) trains as written: code such as `x.view(-1, 320)` after a convolution assumes the
    default (contiguous NCHW) layout."""
    if setting != "auto":
        return bool(setting)
    from kiln.models.hub import library_of

    return device.type in ("cpu", "cuda") and (":" not in model_name or library_of(model_name) is not None)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
