"""An epoch's metrics to the trackers (files, TensorBoard, W&B, MLflow) and one summary line to the console."""

from __future__ import annotations

import logging

from kiln.track import Trackers
from kiln.train.callbacks.base import Callback
from kiln.train.callbacks.checkpoint import ModelCheckpoint

log = logging.getLogger("kiln")


class LogMetrics(Callback):
    def __init__(self, trackers: Trackers):
        self.trackers = trackers

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.trackers.log_epoch(epoch, metrics)


class EpochSummary(Callback):
    """`epoch 3/12 | train loss ... | val loss ... acc ... * | lr ...`; the star marks a new best.pt, so it
    comes after the checkpoint callback."""

    def __init__(self, checkpoint: ModelCheckpoint | None = None):
        self.checkpoint = checkpoint

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        improved = self.checkpoint is not None and self.checkpoint.improved
        log.info(summary(epoch, trainer.epochs, metrics, improved, trainer.task.train_metric, trainer.task.headline))


def summary(epoch: int, epochs: int, m: dict[str, float], improved: bool, train_metric: str = "acc",
            headline: str = "acc") -> str:
    """The epoch's line: the losses, the task's training metric and its headline validation metric."""
    parts = [f"epoch {epoch}/{epochs}", f"train loss {m['train/loss']:.4f} {train_metric} {m[f'train/{train_metric}']:.4f}"]
    if "val/loss" in m:
        parts.append(f"val loss {m['val/loss']:.4f} {headline} {m[f'val/{headline}']:.4f}" + (" *" if improved else ""))
    parts.append(f"lr {m['lr']:.3g}  {m['time/epoch_s']:.1f}s  {m['time/samples_per_s']:,.0f} samples/s"
                 + (f"  (+{m['time/first_step_s']:.1f}s first step)" if "time/first_step_s" in m else ""))
    return " | ".join(parts)
