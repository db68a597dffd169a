"""Epoch-end callbacks: early stopping and checkpointing. Both resume exactly (state_dict/load_state_dict)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from kiln.config import CheckpointConfig, EarlyStoppingConfig
from kiln.train.state import copy_checkpoint, save_checkpoint

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


class EarlyStopping:
    def __init__(self, cfg: EarlyStoppingConfig):
        self.enabled, self.patience = cfg.enabled, cfg.patience
        self.monitor = Monitor(cfg.monitor, cfg.mode, cfg.min_delta)
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

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = state["wait"]
        self.monitor.load_state_dict(state["monitor"])


class ModelCheckpoint:
    """Writes last.pt every epoch, best.pt whenever the monitored metric improves, and the top-k epochs."""

    def __init__(self, cfg: CheckpointConfig, folder: Path):
        self.folder, self.keep_top_k = Path(folder), cfg.keep_top_k
        self.monitor = Monitor(cfg.monitor, cfg.mode)
        self.top: list[tuple[float, int]] = []  # (value, epoch) of the kept epoch-NNN.pt files

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def save_last(self, payload: dict[str, Any]) -> None:
        save_checkpoint(self.last, payload)

    def on_epoch_end(self, metrics: dict[str, float], epoch: int, payload_fn) -> bool:
        """Update the monitor, then write checkpoints from `payload_fn()` (which must include this state)."""
        improved = self.monitor.update(metrics, epoch)
        if self.keep_top_k:
            self.top.append((metrics[self.monitor.metric], epoch))
            self.top.sort(key=lambda t: t[0], reverse=self.monitor.mode == "max")
        self.save_last(payload_fn())
        if improved:
            copy_checkpoint(self.last, self.best)
        if self.keep_top_k:
            if any(e == epoch for _, e in self.top[:self.keep_top_k]):
                copy_checkpoint(self.last, self.folder / f"epoch-{epoch:03d}.pt")
            for _, old in self.top[self.keep_top_k:]:
                (self.folder / f"epoch-{old:03d}.pt").unlink(missing_ok=True)
            self.top = self.top[:self.keep_top_k]
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor.state_dict(), "top": [list(t) for t in self.top]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state["monitor"])
        self.top = [tuple(t) for t in state["top"]]
