"""An epoch's metrics to the trackers (files, TensorBoard, W&B, MLflow) and one summary line to the console."""

from __future__ import annotations

import logging
import statistics
from typing import TYPE_CHECKING

from kiln.track import Trackers
from kiln.train.callbacks.base import Callback
from kiln.train.callbacks.checkpoint import ModelCheckpoint

if TYPE_CHECKING:
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")


class LogMetrics(Callback):
    def __init__(self, trackers: Trackers):
        self.trackers = trackers

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.trackers.log_epoch(epoch, metrics)


class EpochSummary(Callback):
    """`epoch 3/12 | train loss ... | val loss ... acc ... * | lr ...`; the star marks a new best.pt, so it
    comes after the checkpoint callback."""

    def __init__(self, checkpoint: ModelCheckpoint | None = None):
        self.checkpoint = checkpoint
        self.epoch_times: list[float] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        improved = self.checkpoint is not None and self.checkpoint.improved
        task = trainer.task
        line = summary(epoch, trainer.epochs, metrics, improved, task.train_metric, task.headline, task.eval_loss)
        self.epoch_times.append(metrics["time/epoch_s"])
        if epoch < trainer.epochs:  # the median epoch so far: the first one's warm-up does not skew it for long
            line += f"  ~{duration(statistics.median(self.epoch_times) * (trainer.epochs - epoch))} left"
        log.info(line)


def duration(seconds: float) -> str:
    """45 s, 9 min 30 s, 1 h 05 min: a time to go, as people read it."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s < 600 else f"{round(s / 60)} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def summary(epoch: int, epochs: int, m: dict[str, float], improved: bool, train_metric: str | None = "acc",
            headline: str | None = "acc", eval_loss: bool = True) -> str:
    """The epoch's line: the losses, the task's training metric and its headline validation metric (a task may
    have neither)."""
    trained = f" {train_metric} {m[f'train/{train_metric}']:.4f}" if train_metric else ""
    parts = [f"epoch {epoch}/{epochs}", f"train loss {m['train/loss']:.4f}{trained}"]
    if "val/loss" in m:
        shown = f" {headline} {m[f'val/{headline}']:.4f}" if headline else ""
        loss = f"val loss {m['val/loss']:.4f}" if eval_loss else "val"
        parts.append(f"{loss}{shown}" + (" *" if improved else ""))
    parts.append(f"lr {m['lr']:.3g}  {m['time/epoch_s']:.1f}s  {m['time/samples_per_s']:,.0f} samples/s"
                 + (f"  data {m['time/data_wait']:.0%}" if "time/data_wait" in m else "")
                 + (f"  (+{m['time/first_step_s']:.1f}s first step)" if "time/first_step_s" in m else ""))
    return " | ".join(parts)
