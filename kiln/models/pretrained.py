"""Starting a model from other weights: torchvision's pretrained weights, a kiln run, or a state_dict file.

Tensors whose shapes differ only in the input channels of a convolution are adapted (3 -> 1: the sum
of the RGB kernels, so a gray image gives the response of the equivalent RGB image; 1 -> 3: the kernel
repeated and divided by 3). Everything else must match exactly or is left newly initialised. The
report says which tensors were loaded, adapted, newly initialised and ignored: no silent strict=False.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kiln.errors import KilnError, first_line

log = logging.getLogger("kiln")


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # "name: (shape) -> (shape)"
    new: list[str] = field(default_factory=list)  # newly initialised: absent or of another shape in the source
    ignored: list[str] = field(default_factory=list)  # in the source, not in the model

    def summary(self) -> str:
        lines = [f"pretrained weights from {self.source}: {len(self.loaded)} tensors loaded, "
                 f"{len(self.adapted)} adapted, {len(self.new)} newly initialised, {len(self.ignored)} ignored"]
        for title, items in (("adapted", self.adapted), ("newly initialised", self.new), ("ignored", self.ignored)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


def adapt_in_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv kernel (O, C, kh, kw) for `in_channels` inputs that answers a replicated-channel image as before."""
    old = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // old)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (old / in_channels)


def merge_weights(model: nn.Module, source: dict[str, torch.Tensor], name: str) -> LoadReport:
    """Load what fits from `source` into `model` and report exactly what happened to every tensor."""
    own = model.state_dict()
    report = LoadReport(name)
    merged = {}
    for key, target in own.items():
        value = source.get(key)
        if value is None:
            report.new.append(key)
            merged[key] = target
        elif value.shape == target.shape:
            report.loaded.append(key)
            merged[key] = value.to(target.dtype)
        elif value.ndim == 4 and target.ndim == 4 and value.shape[0] == target.shape[0] \
                and value.shape[2:] == target.shape[2:]:
            merged[key] = adapt_in_channels(value, target.shape[1]).to(target.dtype)
            report.adapted.append(f"{key}: {tuple(value.shape)} -> {tuple(target.shape)}")
        else:
            report.new.append(f"{key} (source {tuple(value.shape)}, model {tuple(target.shape)})")
            merged[key] = target
    report.ignored = [k for k in source if k not in own]
    model.load_state_dict(merged)
    return report


def source_weights(spec: str, arch: str, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, description) of `model.pretrained`."""
    if spec == "torchvision":
        return _torchvision(arch, weights)
    path = Path(spec)
    if path.is_dir():
        return _from_run_folder(path)
    if not path.is_file():
        raise KilnError(f"model.pretrained={spec!r}: no such file or folder (use torchvision, a kiln run folder, "
                        "a kiln checkpoint or a state_dict file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or pickled with code
        raise KilnError(f"model.pretrained={spec!r}: cannot load it ({first_line(e)})") from None
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]  # a kiln checkpoint
    elif isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]  # Lightning and others
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise KilnError(f"model.pretrained={spec!r} is not a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in payload.items()}, str(path)


def _from_run_folder(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    from kiln.core.state import load_checkpoint
    from kiln.runs import RunDir, newest_finished

    run = RunDir(folder)
    if not run.config_file.is_file():  # runs/<name>: the newest finished run in it
        newest = newest_finished(folder)
        if newest is None:
            raise KilnError(f"model.pretrained={folder}: neither a run folder nor a folder with a finished run")
        run = newest
    path = run.checkpoint("best")
    return load_checkpoint(path)["model"], str(path)


def _torchvision(arch: str, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (KeyError, ValueError):
        raise KilnError(f"model.pretrained=torchvision: torchvision has no weights for '{arch}'") from None
    try:
        member = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise KilnError(f"model.weights={weights!r} is not a weights of {arch}; "
                        f"choose from: {', '.join(m.name for m in enum)}") from None
    try:
        state = member.get_state_dict(progress=False)  # torchvision's own API and cache ($TORCH_HOME/hub)
    except (OSError, RuntimeError) as e:
        raise KilnError(f"cannot get {arch} {member.name} weights ({e}); without internet, put the file "
                        f"{Path(member.url).name} into {torch.hub.get_dir()}/checkpoints/") from None
    return state, f"torchvision {arch} {member.name}"


def load_pretrained(model: nn.Module, spec: str, arch: str, weights: str) -> LoadReport:
    source, name = source_weights(spec, arch, weights)
    report = merge_weights(model, source, name)
    if not report.loaded and not report.adapted:
        raise KilnError(f"model.pretrained: no tensor of {name} fits this model; is it another architecture? "
                        f"(model expects e.g. {', '.join(list(model.state_dict())[:4])})")
    log.info(report.summary())
    return report
