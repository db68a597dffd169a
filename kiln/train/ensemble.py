"""Test-time augmentation and ensembles: several answers to one input, averaged into one.

Views (`--tta hflip | flips | crops:N`) are transformed copies of an image batch; `WithViews` is a model that answers
with the average of its model's answers over the views, so evaluation, prediction and cross-validation use it like
any model. An ensemble averages several runs' answers over the same inputs, each run reading the inputs as it was
trained to (its own image size, normalisation, vocabulary). Either way the averaging is the task's
(`Task.average`: class probabilities, label probabilities, values), so its loss and metrics are computed as for one
model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kiln.core.errors import KilnError
from kiln.runs import RunDir
from kiln.tasks import Task

CROP_SHARE = 0.875  # the side of a TTA crop, as a share of the image's (torchvision's 224/256)


@dataclass(frozen=True)
class View:
    """One transformed copy of an image batch (B, C, H, W); `undo` maps an answer per pixel back onto the input's
    pixels (None: it cannot, as for a crop)."""

    name: str
    apply: Callable[[torch.Tensor], torch.Tensor]
    undo: Callable[[torch.Tensor], torch.Tensor] | None


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _hvflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2, -1)


IDENTITY = View("image", _same, _same)
FLIPS = (IDENTITY, View("hflip", _hflip, _hflip), View("vflip", _vflip, _vflip), View("hvflip", _hvflip, _hvflip))


def _crop(where: str, mirrored: bool) -> View:
    def apply(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ch, cw = max(1, round(h * CROP_SHARE)), max(1, round(w * CROP_SHARE))
        top = {"c": (h - ch) // 2, "tl": 0, "tr": 0, "bl": h - ch, "br": h - ch}[where]
        left = {"c": (w - cw) // 2, "tl": 0, "tr": w - cw, "bl": 0, "br": w - cw}[where]
        out = F.interpolate(x[..., top:top + ch, left:left + cw].float(), size=(h, w), mode="bilinear",
                            align_corners=False)
        return out.flip(-1) if mirrored else out

    return View(f"crop-{where}" + ("-hflip" if mirrored else ""), apply, None)


CROPS = (IDENTITY, *(_crop(w, False) for w in ("c", "tl", "tr", "bl", "br")), FLIPS[1],
         *(_crop(w, True) for w in ("c", "tl", "tr", "bl", "br")))


def tta_views(spec: str | None) -> tuple[View, ...]:
    """The views `--tta SPEC` names (None or "none": the image alone)."""
    if spec is None or spec == "none":
        return (IDENTITY,)
    if spec == "hflip":
        return FLIPS[:2]
    if spec == "flips":
        return FLIPS
    if (m := re.fullmatch(r"crops:(\d+)", spec)) and 1 <= int(m[1]) <= len(CROPS):
        return CROPS[:int(m[1])]
    raise KilnError(f"--tta {spec!r} is not a set of views kiln knows: hflip, flips, or crops:N with N from 1 to "
                    f"{len(CROPS)} (see kiln test --help)")


class WithViews(nn.Module):
    """`model`'s answer averaged over `views` of each image batch (the task's average: probabilities for classes
    and labels, values for regression). Answers per pixel (segmentation) are mapped back before averaging."""

    def __init__(self, model: nn.Module, task: Task, views: Sequence[View]):
        super().__init__()
        self.model, self.task, self.views = model, task, tuple(views)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_image_batch(inputs)
        answers = []
        for view in self.views:
            out = self.task.outputs(self.model, view.apply(inputs)).float()
            if self.task.pixel_outputs:
                if view.undo is None:
                    raise KilnError(f"--tta {view.name}: a crop cannot be mapped back onto the image's pixels for "
                                    f"task {self.task.name}; use --tta hflip or flips")
                out = view.undo(out)
            answers.append(out)
        return self.task.average(answers, [1 / len(answers)] * len(answers))


def check_image_batch(inputs: object) -> None:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
        what = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise KilnError(f"--tta transforms images (batch, channels, height, width); this model's inputs are {what}. "
                        "Leave --tta out for this run")


def with_views(model: nn.Module, task: Task, tta: str | None) -> nn.Module:
    """`model`, or `WithViews` of it when `tta` names views besides the image itself."""
    views = tta_views(tta)
    return model if len(views) == 1 else WithViews(model, task, views).eval()


def weights_of(given: Sequence[float] | None, count: int) -> list[float]:
    """The members' weights, summing to one (default: equal)."""
    if given is None:
        return [1 / count] * count
    if len(given) != count:
        raise KilnError(f"--weights gives {len(given)} weights for {count} models: give one per model, in order")
    if any(w < 0 for w in given) or sum(given) <= 0:
        raise KilnError(f"--weights {','.join(map(str, given))}: weights must be at least 0 and not all 0")
    return [w / sum(given) for w in given]


def expand_runs(paths: Sequence[Path | str]) -> list[Path]:
    """Run folders from the paths given: a run folder is itself; a `kiln cv` folder is each of its folds
    (fold-1, fold-2, ...)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        folds = sorted(path.glob("fold-*"), key=lambda p: int(p.name.split("-")[1]) if p.name[5:].isdigit() else 0)
        if not RunDir(path).is_run and (folds := [f for f in folds if RunDir(f).is_run]):
            runs += folds
        else:
            runs.append(path)
    return runs


def is_model_path(path: str) -> bool:
    """Whether a command-line argument names a model (a run folder, a cv folder, an exported file) rather than an
    input."""
    p = Path(path)
    return p.suffix == ".onnx" or RunDir(p).is_run or (p.is_dir() and any(RunDir(f).is_run for f in p.glob("fold-*")))


def averaged_outputs(task: Task, members: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The members' outputs over the same samples, averaged by the task (one member: its outputs)."""
    return members[0] if len(members) == 1 else task.average(list(members), list(weights))


__all__ = ["View", "WithViews", "averaged_outputs", "expand_runs", "is_model_path",
           "tta_views", "weights_of", "with_views"]
