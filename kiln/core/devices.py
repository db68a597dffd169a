"""Which kind of device a run uses, before anything is built: the config's device profiles (`on_device:`) are
chosen by it. kiln.train.device turns the same choice into a torch.device."""

from __future__ import annotations

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def device_type(requested: str) -> str:
    """cpu, cuda, mps or xpu for trainer.device=`requested`; auto picks cuda, then mps, then cpu (torch is
    imported only for auto)."""
    if requested != "auto":
        return requested.split(":")[0]
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"
