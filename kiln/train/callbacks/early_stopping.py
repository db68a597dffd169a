"""Early stopping on a monitored metric; its patience counter resumes exactly."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from kiln.config import EarlyStoppingConfig, watched
from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")


class Monitor:
    """Tracks the best value of one metric; `min_delta` is the smallest change that counts."""

    def __init__(self, metric: str, mode: str, min_delta: float = 0.0):
        self.metric, self.mode, self.min_delta = metric, mode, min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None

    def is_improvement(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        value = metrics[self.metric]
        improved = self.is_improvement(value)
        if improved:
            self.best, self.best_epoch = value, epoch
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class EarlyStopping(Callback):
    """Stops training when the monitored metric has not improved for `patience` epochs."""

    state_key = "early_stopping"

    def __init__(self, cfg: EarlyStoppingConfig):
        self.enabled, self.patience = cfg.enabled, cfg.patience
        self.monitor = Monitor(*watched(cfg), cfg.min_delta)
        self.wait = 0

    def should_stop(self, metrics: dict[str, float], epoch: int) -> bool:
        if not self.enabled:
            return False
        self.wait = 0 if self.monitor.update(metrics, epoch) else self.wait + 1
        if self.wait >= self.patience:
            log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                     self.monitor.metric, self.wait, self.monitor.best, self.monitor.best_epoch)
            return True
        return False

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.should_stop(metrics, epoch):
            trainer.stop_training = True

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = state["wait"]
        self.monitor.load_state_dict(state["monitor"])
