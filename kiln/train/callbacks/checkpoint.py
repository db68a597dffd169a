"""Checkpointing: last.pt every epoch (and when a stop is asked for), best.pt whenever the monitored metric
improves, and the top-k epochs as epoch-NNN.pt. Its own state (the best value, the kept epochs) resumes exactly."""

from __future__ import annotations

from typing import Any

from kiln.config import CheckpointConfig, watched
from kiln.core.state import copy_checkpoint, save_checkpoint
from kiln.runs import RunDir
from kiln.train.callbacks.base import Callback
from kiln.train.callbacks.early_stopping import Monitor


class ModelCheckpoint(Callback):
    state_key = "checkpoint"

    def __init__(self, cfg: CheckpointConfig, run: RunDir | None):
        """`run` None: a rank that takes part in gathering the state (FSDP) but does not write it."""
        self.run, self.keep_top_k = run, cfg.keep_top_k
        self.monitor = Monitor(*watched(cfg))
        self.top: list[tuple[float, int]] = []  # (value, epoch) of the kept epoch-NNN.pt files
        self.improved = False  # at the last epoch end

    def save_last(self, payload: dict[str, Any]) -> None:
        if self.run is not None:
            save_checkpoint(self.run.last, payload)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        """Update the monitor, then write checkpoints of the trainer's state (which includes this one's)."""
        self.improved = self.monitor.update(metrics, epoch)
        if self.keep_top_k:
            self.top.append((metrics[self.monitor.metric], epoch))
            self.top.sort(key=lambda t: t[0], reverse=self.monitor.mode == "max")
        self.save_last(trainer.state_dict())
        if self.run is None:
            return
        if self.improved:
            copy_checkpoint(self.run.last, self.run.best)
        if self.keep_top_k:
            if any(e == epoch for _, e in self.top[:self.keep_top_k]):
                copy_checkpoint(self.run.last, self.run.epoch_checkpoint(epoch))
            for _, old in self.top[self.keep_top_k:]:
                self.run.epoch_checkpoint(old).unlink(missing_ok=True)
            self.top = self.top[:self.keep_top_k]

    def on_interrupt(self, trainer) -> None:
        self.save_last(trainer.state_dict())

    def on_fit_end(self, trainer) -> None:
        self.save_last(trainer.state_dict())  # marked finished

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor.state_dict(), "top": [list(t) for t in self.top]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state["monitor"])
        self.top = [tuple(t) for t in state["top"]]
