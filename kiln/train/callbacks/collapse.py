"""A model that answers the same for every input — one class for every validation image — while its training
loss falls looks like progress in the loss curve. This watch warns once, with the likely causes, when the task
sees that for several epochs in a row (`Task.collapse_warning`, which the report asks too)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kiln.core import dist
from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")


class CollapseWatch(Callback):
    state_key = "collapse_watch"

    def __init__(self, patience: int = 3):
        self.patience = patience
        self.rows: list[dict[str, float]] = []  # the epochs' metrics the task judges (its own keys only)
        self.warned = False

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.rows = [*self.rows, {"epoch": epoch, **{k: v for k, v in metrics.items() if k.startswith("val/")}}]
        self.rows = self.rows[-self.patience:]
        if self.warned:
            return
        message = trainer.task.collapse_warning(self.rows, self.patience)
        if message:
            self.warned = True
            if dist.current().is_main:
                log.warning(message)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "warned": self.warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.warned = list(state["rows"]), bool(state["warned"])
