"""The run's status.json while it trains: the epochs done so far, written by the main process after each epoch's
checkpoint (the session writes the states around training: running at the start, finished / interrupted / failed at
the end), so status.json — of a run, a cv fold or a tune trial — is never more than one epoch behind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.core import dist
from kiln.runs import RunDir, RunStatus
from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.train.loop import Trainer


class StatusUpdate(Callback):
    def __init__(self, run: RunDir):
        self.run, self.writes = run, dist.current().is_main

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.writes:  # what the session wrote at the start (world size, batch, parameters) stays
            kept = {k: v for k, v in self.run.status().items() if k not in ("state", "updated")}
            self.run.write_status(RunStatus.RUNNING, **{**kept, "epoch": epoch, "epochs": trainer.epochs})
