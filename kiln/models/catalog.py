"""`kiln models`: the models kiln can build by name, with what is known without building one — parameters and
input size from the libraries' weight metadata, which weights exist, and whether they are on this machine."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    name: str  # as model.name takes it
    params: str  # e.g. "11.7M" (at 1,000 classes), or how the data sizes it
    input_size: str  # the weights' training crop, e.g. "224"
    weights: str  # the weights that exist, the default first
    here: str  # whether the default weights are on this machine: "yes", "no", or "-" (no weights)


def _matches(name: str, pattern: str) -> bool:
    if not pattern:
        return True
    return fnmatch.fnmatch(name, pattern) if any(c in pattern for c in "*?[") else pattern in name


def kiln_entries(pattern: str = "") -> list[Entry]:
    from kiln.core.model_names import kiln_models

    return [Entry(name, "(sized by the data)", "any", "-", "-") for name in sorted(kiln_models()) if
            _matches(name, pattern)]


def torchvision_entries(pattern: str = "") -> list[Entry]:
    import torch
    import torchvision

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    out = []
    from kiln.core.model_names import torchvision_names

    for arch in torchvision_names():
        name = f"torchvision:{arch}"
        if not _matches(name, pattern):
            continue
        enum = torchvision.models.get_model_weights(arch)
        default = enum.DEFAULT
        crop = getattr(default.transforms, "keywords", {}).get("crop_size", "")
        names = [default.name] + [m.name for m in enum if m is not default]
        here = "yes" if (cache / Path(default.url).name).is_file() else "no"
        out.append(Entry(name, f"{default.meta['num_params'] / 1e6:.1f}M", str(crop), ", ".join(names), here))
    return out


def timm_entries(pattern: str) -> list[Entry]:
    """timm's models whose name matches (its list is long: a pattern is required); [] without timm."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return []
    import timm
    from huggingface_hub import try_to_load_from_cache

    out = []
    for arch in timm.list_models(pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"):
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        cfg = timm.get_pretrained_cfg(arch)
        size = cfg.input_size[-1] if cfg is not None and cfg.input_size else ""
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        here = "-" if not repo else "yes" if isinstance(try_to_load_from_cache(repo, "model.safetensors"), str) \
            else "no"
        out.append(Entry(f"timm:{arch}", "-", str(size), ", ".join(tags) or "-", here))
    return out


def table(entries: list[Entry]) -> str:
    header = Entry("model.name", "params", "input", "weights (default first)", "on this machine")
    rows = [header, *entries]
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("name", "params", "input_size", "here")]
    lines = []
    for r in rows:
        weights = r.weights if len(r.weights) <= 60 else r.weights[:57] + "..."
        lines.append(f"{r.name:<{widths[0]}}  {r.params:>{widths[1]}}  {r.input_size:>{widths[2]}}  "
                     f"{r.here:<{widths[3]}}  {weights}")
    return "\n".join(lines)
