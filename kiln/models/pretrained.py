"""Starting a model from other weights: torchvision's, timm's or Hugging Face's pretrained weights (offline
first), a kiln run, a .safetensors file or a state_dict file.

Tensors whose shapes differ only in the input channels of a convolution are adapted (3 -> 1: the sum
of the RGB kernels, so a gray image gives the response of the equivalent RGB image; 1 -> 3: the kernel
repeated and divided by 3). Everything else must match exactly or is left newly initialised. The
report says which tensors were loaded, adapted, newly initialised and ignored: no silent strict=False.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.config import ModelConfig
from kiln.core.errors import KilnError, first_line
from kiln.runs import RunDir

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


LIBRARY_WEIGHTS = ("torchvision", "timm", "hf")  # model.pretrained keywords: the library's own weights


def _check_keyword(cfg: ModelConfig) -> None:
    """A library keyword must name the model's own library (torchvision's weights also fit kiln's resnets)."""
    from kiln.models.hub import library_of

    spec, library = str(cfg.pretrained), library_of(cfg.name)
    if library not in (None, spec) or (spec != "torchvision" and library is None):
        raise KilnError(f"model.pretrained={spec} needs a {spec}:NAME model; model.name={cfg.name} is "
                        f"{'a ' + library + ' model' if library else 'kiln' + chr(39) + 's own'}: use "
                        f"model.pretrained={library or 'torchvision'}, or a weights file")


def source_weights(cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, description) of `model.pretrained` for the model `model.name` (not `hf`: transformers loads
    its own, see load_pretrained)."""
    spec = str(cfg.pretrained)
    if spec in LIBRARY_WEIGHTS:
        _check_keyword(cfg)
        arch = cfg.name.split(":", 1)[-1]
        if spec == "timm":
            return _timm(arch, cfg.weights, cfg.download)
        return _torchvision(arch, cfg.weights, cfg.download)
    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file() and not RunDir(path).is_run:
        return _from_hf_folder(path)
    if path.is_dir() and (path / "manifest.json").is_file():  # a sharded checkpoint (FSDP) of a kiln run
        from kiln.core.checkpoint import read_checkpoint

        return read_checkpoint(path).model, str(path)
    if path.is_dir():
        return _from_run_folder(path)
    if not path.is_file():
        raise KilnError(f"model.pretrained={spec!r}: no such file or folder (use torchvision or timm, a kiln run "
                        "folder, a kiln checkpoint, a .safetensors file or a state_dict file)")
    return _from_file(path), str(path)


def _check_library_fit(model: nn.Module, cfg: ModelConfig, report: LoadReport) -> None:
    """A torchvision/timm model must take every pretrained tensor but its head's: one of another shape (a ViT's
    position embeddings at another image size) would silently start fresh, so it is refused with the reason."""
    from kiln.models.freeze import head_prefix
    from kiln.models.hub import library_of

    if library_of(cfg.name) is None:
        return
    head = head_prefix(model, cfg.head)
    misfits = [k for k in report.new if " (source " in k and not k.startswith(head + ".")]
    if misfits:
        raise KilnError(f"{', '.join(misfits[:4])} of {report.source} do not fit {cfg.name} as built for this data; "
                        "weights trained at one input size need that size (leave data.image_size unset to take "
                        "the weights' own, or set model.args as the weights were trained)")


def _from_file(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file, or a torch file (loaded weights_only): a state_dict, a kiln checkpoint, a Lightning
    or timm training checkpoint."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            payload: Any = load_file(str(path))
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — corrupt, or pickled with code
        raise KilnError(f"model.pretrained={str(path)!r}: cannot load it ({first_line(e)})") from None
    if isinstance(payload, dict):
        for key in ("model", "state_dict", "state_dict_ema"):  # kiln, Lightning, timm's train.py
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise KilnError(f"model.pretrained={str(path)!r} is not a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in payload.items()}


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")  # safetensors first


def _from_hf_folder(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A Hugging Face `save_pretrained` folder (config.json beside the weights), as timm and transformers write it."""
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return _from_file(folder / name), str(folder / name)
    raise KilnError(f"model.pretrained={folder}: a Hugging Face folder (it holds config.json) without weights; "
                    f"looked for {', '.join(HF_WEIGHTS)}")


def _from_run_folder(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    from kiln.core.checkpoint import read_checkpoint
    from kiln.runs import newest_finished

    run = RunDir(folder)
    if not run.is_run:  # runs/<name>: the newest finished run in it
        newest = newest_finished(folder)
        if newest is None:
            raise KilnError(f"model.pretrained={folder}: neither a run folder nor a folder with a finished run")
        run = newest
    path = run.checkpoint("best")
    return read_checkpoint(path).model, str(path)


def check_available(cfg: ModelConfig) -> None:
    """Raise the KilnError loading would raise when `model.pretrained`'s weights are not on this machine (and
    model.download is off), without reading them: a check to make before any data is read."""
    spec = str(cfg.pretrained)
    if spec in ("torchvision", "timm"):
        _check_keyword(cfg)
        arch = cfg.name.split(":", 1)[-1]
        (_torchvision_member if spec == "torchvision" else _timm_file)(arch, cfg.weights, cfg.download)
    elif spec not in LIBRARY_WEIGHTS and not Path(spec).exists():
        raise KilnError(f"model.pretrained={spec!r}: no such file or folder (use torchvision or timm, a kiln run "
                        "folder, a kiln checkpoint, a .safetensors file or a state_dict file)")


def _torchvision_member(arch: str, weights: str, download: bool) -> Any:
    """torchvision's weights enum member for `arch` and `weights`, checked to be in its cache (or `download`)."""
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
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(member.url).name
    if not cached.is_file() and not download:
        raise KilnError(f"the {arch} {member.name} weights are not on this machine: looked for {cached} "
                        f"($TORCH_HOME/hub/checkpoints). Set model.download=true to fetch them, or put the file "
                        f"from {member.url} there")
    return member


def _torchvision(arch: str, weights: str, download: bool) -> tuple[dict[str, torch.Tensor], str]:
    member = _torchvision_member(arch, weights, download)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(member.url).name
    try:
        state = member.get_state_dict(progress=False)  # torchvision's own API and cache ($TORCH_HOME/hub)
    except (OSError, RuntimeError) as e:
        raise KilnError(f"cannot get {arch} {member.name} weights ({first_line(e)}); without internet, put the "
                        f"file {cached.name} into {cached.parent}/") from None
    return state, f"torchvision {arch} {member.name}"


def _timm(arch: str, weights: str, download: bool) -> tuple[dict[str, torch.Tensor], str]:
    """A timm model's weights from the Hugging Face cache ($HF_HOME/hub), safetensors first."""
    path, description = _timm_file(arch, weights, download)
    return _from_file(path), description


def _timm_file(arch: str, weights: str, download: bool) -> tuple[Path, str]:
    """(the file of a timm model's weights in the Hugging Face cache, fetched there with `download`, its
    description)."""
    import timm
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    name = arch if weights == "DEFAULT" else f"{arch}.{weights}"
    pretrained = timm.get_pretrained_cfg(name)
    repo = getattr(pretrained, "hf_hub_id", None) if pretrained is not None else None
    if not repo:
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        raise KilnError(f"timm has no Hugging Face weights {name!r}" + (f"; its tags: {', '.join(tags)} (set "
                        "model.weights)" if tags else ""))
    looked = []
    for file in ("model.safetensors", "pytorch_model.bin"):
        try:
            path = Path(hf_hub_download(repo, file, local_files_only=not download))
        except LocalEntryNotFoundError:
            looked.append(f"{repo}/{file}")
            continue
        except Exception as e:  # noqa: BLE001 — the hub's many errors (no such file in the repo, network)
            looked.append(f"{repo}/{file} ({first_line(e)})")
            continue
        return path, f"timm {name} ({repo})"
    from huggingface_hub.constants import HF_HUB_CACHE

    raise KilnError(f"the timm weights {name} are not on this machine: looked in {HF_HUB_CACHE} for "
                    f"{', '.join(looked)}. Set model.download=true to fetch them, or run `hf download {repo}`")


def load_pretrained(model: nn.Module, cfg: ModelConfig) -> LoadReport:
    if cfg.pretrained == "hf":
        from kiln.models.hf import load_weights

        _check_keyword(cfg)
        source_name, loaded, new, ignored = load_weights(model, cfg.name.split(":", 1)[1], cfg.download)
        report = LoadReport(source_name, loaded=loaded, new=new, ignored=ignored)
    else:
        source, name = source_weights(cfg)
        report = merge_weights(model, source, name)
        _check_library_fit(model, cfg, report)
    if not report.loaded and not report.adapted:
        raise KilnError(f"model.pretrained: no tensor of {report.source} fits this model; is it another "
                        f"architecture? (model expects e.g. {', '.join(list(model.state_dict())[:4])})")
    log.info(report.summary())
    return report
