"""A training loop that waits for its data leaves the accelerator idle. Every epoch logs the share of its training
time spent waiting for batches (`time/data_wait`, `data N%` on the epoch line); this watch warns once when that
share is large, with the setting to change (`kiln.data.loaders.wait_advice`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kiln.core import dist
from kiln.data.loaders import wait_advice
from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")
WAIT_WARNING = 0.3  # the share of step time from which waiting for data is worth a setting
WAIT_WARNING_S = 1.0  # ... once an epoch waits this long in all (a tiny epoch's share is noise)


class DataWaitWatch(Callback):
    def __init__(self, num_workers: int, threshold: float = WAIT_WARNING):
        self.num_workers, self.threshold, self.warned = num_workers, threshold, False

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        share = metrics.get("time/data_wait", 0.0)
        if self.warned or share < self.threshold or share * metrics.get("time/epoch_s", 0.0) < WAIT_WARNING_S:
            return
        self.warned = True
        if dist.current().is_main:
            log.warning("%.0f%% of epoch %d's training time waited for data: %s", 100 * share, epoch,
                        wait_advice(trainer.data, self.num_workers))
