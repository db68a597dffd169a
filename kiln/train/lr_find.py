"""The learning-rate range test (Smith, 2015): raise the LR exponentially batch by batch, record the smoothed
loss, and suggest the LR where the loss falls fastest. The model and optimizer are restored afterwards."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.config import Config, MulticlassTaskConfig, TrainerConfig
from kiln.data import Batches
from kiln.tasks import build_task
from kiln.train.step import TrainStep


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    stopped_early: bool


@dataclass(frozen=True)
class Span:
    """The sweep: `steps` batches at LRs log-spaced from start_lr to end_lr; the loss is smoothed exponentially
    (`smoothing`), and the sweep stops once it exceeds `diverge` times the best so far."""

    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    smoothing: float = 0.98
    diverge: float = 4.0


def find_lr(cfg: Config, span: Span = Span()) -> tuple[LRFindResult, Path]:
    """The LR range test of `cfg` as `kiln train` would start it (the same data, model, weights and training step,
    one optimizer step per batch, no schedule: the sweep sets the learning rate itself), written to a new
    `lr-find-<timestamp>` folder under the run's log dir: the plot and the numbers. (The result, the folder.)"""
    import json

    from kiln.config.files import with_overrides
    from kiln.core.state import seed_everything
    from kiln.data import fresh_encoder
    from kiln.runs import RunDir
    from kiln.train.build import build_trainer
    from kiln.train.plan import RunPlan

    cfg = with_overrides(cfg, ["trainer.accumulate=1", "schedule.name=none"])
    plan = RunPlan.of(cfg)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    data = plan.data(("train",), vocab=fresh_encoder(cfg))
    t = build_trainer(plan, data, pretrained=True)
    result = sweep(t.model, t.optimizer, t.train_batches, device=plan.device, precision=t.precision, step=t.step,
                   span=span)
    folder = RunDir.create(cfg.log.dir, cfg.name, prefix="lr-find-").path
    plot(result, folder / "lr_find")
    (folder / "lr_find.json").write_text(json.dumps({"suggestion": result.suggestion, "lrs": result.lrs,
                                                     "losses": result.losses}, indent=1))
    return result, folder


def sweep(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Batches, *, device: torch.device,
          precision: str = "32", step: TrainStep | None = None, span: Span = Span()) -> LRFindResult:
    """Train the `span`'s batches with its LRs; stop when the loss diverges.
    Each batch is `step`, the training step `kiln train` runs (label smoothing, scaler, clipping); it must not
    accumulate or step a schedule (`kiln lr-find` builds it with accumulate=1 and no schedule)."""
    step = step or TrainStep(TrainerConfig(), build_task(MulticlassTaskConfig(), None), optimizer, device, precision)
    start_lr, end_lr, steps, smoothing = span.start_lr, span.end_lr, span.steps, span.smoothing
    model_state = copy.deepcopy(model.state_dict())
    optim_state = copy.deepcopy(optimizer.state_dict())
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    lrs, losses = [], []
    avg, best, stopped = 0.0, math.inf, False
    try:
        model.train()
        for i, (inputs, targets) in enumerate(islice(_cycle(batches), steps)):
            lr = start_lr * (end_lr / start_lr) ** (i / max(steps - 1, 1))
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * base / max(base_lrs)  # keeps discriminative ratios between groups
            loss = step(model, inputs, targets)
            value = loss.item() if loss is not None else math.nan  # one sync per batch; None: a skipped NaN
            avg = smoothing * avg + (1 - smoothing) * value
            smoothed = avg / (1 - smoothing ** (i + 1))  # bias-corrected exponential average
            if not math.isfinite(smoothed) or (i > 10 and smoothed > span.diverge * best):
                stopped = True
                break
            best = min(best, smoothed)
            lrs.append(lr)
            losses.append(smoothed)
    finally:  # the model and optimizer are exactly as before, whatever happened
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
    return LRFindResult(lrs, losses, suggest(lrs, losses), stopped)


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The LR at the steepest descent of the smoothed loss against log LR (ignoring the noisy ends)."""
    if len(lrs) < 5:
        return lrs[len(lrs) // 2] if lrs else math.nan
    gradient = np.gradient(np.asarray(losses), np.log10(np.asarray(lrs)))
    skip = max(1, len(lrs) // 10)
    window = gradient[skip:-skip] if len(gradient) > 2 * skip + 1 else gradient
    return float(lrs[int(np.argmin(window)) + (skip if len(gradient) > 2 * skip + 1 else 0)])


def _cycle(batches: Batches) -> Iterator[Any]:
    epoch = 0
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


def plot(result: LRFindResult, path: Path) -> list[Path]:
    from kiln.viz.style import OKABE_ITO, figure, save

    fig, ax = figure(figsize=(7, 4.2))
    ax.plot(result.lrs, result.losses, color=OKABE_ITO[0])
    ax.set_xscale("log")
    ax.axvline(result.suggestion, color=OKABE_ITO[3], linestyle="--", linewidth=1)
    ax.annotate(f"suggested lr {result.suggestion:.2g}", xy=(result.suggestion, min(result.losses)),
                xytext=(8, 12), textcoords="offset points", fontsize=9)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"Loss falls fastest at lr ≈ {result.suggestion:.2g}")
    return save(fig, path, formats=("png", "svg"))
