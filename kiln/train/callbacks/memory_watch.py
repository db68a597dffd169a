"""A warning when host or CUDA memory grows at every epoch: the classic leak of tensors kept across steps."""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, ClassVar

from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")


class GrowthWatch(Callback):
    """Warns once when host RSS or CUDA allocated memory has grown at every one of the last `window` epochs,
    by at least `min_step` MiB each, `min_total` MiB in all and `min_share` of the memory in use per epoch on
    average: the classic leak of accumulating tensors. A few MiB an epoch on a process of gigabytes (allocator
    caches, pages of memory-mapped data read in) is noise that levels off, and is not warned about."""

    KEYS: ClassVar[dict[str, str]] = {"mem/host_rss_mib": "host memory (RSS)", "mem/cuda_allocated_mib": "CUDA allocated memory"}

    WHERE: ClassVar[dict[str, str]] = {"mem/host_rss_mib": "this process's resident memory at the end of each epoch",
             "mem/cuda_allocated_mib": "torch.cuda.memory_allocated at the end of each epoch"}

    def __init__(self, window: int = 3, min_step: float = 4.0, min_total: float = 30.0, own_code: bool = True,
                 min_share: float = 0.01):
        """`own_code`: the model or Dataset is the user's code, where the classic leak may be; kiln's own keep no
        tensors across steps, so the warning then says what else grows."""
        self.window, self.min_step, self.min_total, self.min_share = window, min_step, min_total, min_share
        self.own_code = own_code
        self.history: dict[str, list[float]] = {k: [] for k in self.KEYS}
        self.warned: set[str] = set()

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.update(metrics)

    def update(self, metrics: dict[str, float]) -> str | None:
        for key, what in self.KEYS.items():
            if key not in metrics:
                continue
            values = self.history[key]
            values.append(metrics[key])
            recent = values[-(self.window + 1):]
            if key in self.warned or len(recent) <= self.window:
                continue
            steps = [b - a for a, b in itertools.pairwise(recent)]
            grown = recent[-1] - recent[0]
            if min(steps) >= self.min_step and grown >= max(self.min_total, self.min_share * recent[-1] * self.window):
                self.warned.add(key)
                message = (f"{what} grew at each of the last {self.window} epochs ({recent[0]:.0f} -> "
                           f"{recent[-1]:.0f} MiB, +{grown / self.window:.0f} MiB per epoch; "
                           f"{self.WHERE[key]}, logged as {key} in metrics.jsonl). " + (
                               "A classic cause in your own model or Dataset is keeping tensors that hold their "
                               "graph across steps, e.g. `total += loss` instead of `total += loss.item()`, or "
                               "appending outputs to a list." if self.own_code else
                               "kiln's own models and loop keep no tensors across steps; memory-mapped data "
                               "pages being read in and allocator caches filling also raise it, and level off. "
                               "If it keeps growing, compare mem/* in metrics.jsonl over more epochs."))
                log.warning(message)
                return message
        return None
