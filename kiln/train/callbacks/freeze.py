"""The freeze schedule: which parameters train in which epoch (model.freeze, model.unfreeze_at_epoch)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

from kiln.core.errors import KilnError
from kiln.models.freeze import matches
from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")


class FreezeSchedule(Callback):
    """Which parameters train in which epoch: `freeze` until `unfreeze_at_epoch` (1-based), then all. A
    BatchNorm layer whose parameters are all frozen is frozen entirely: kept in eval mode, so its running
    statistics do not move either."""

    def __init__(self, model: nn.Module, freeze: str | list[str], unfreeze_at_epoch: int | None, head: str):
        self.model, self.unfreeze_at_epoch, self.head = model, unfreeze_at_epoch, head
        names = [n for n, _ in model.named_parameters()]
        if freeze == "none":
            self.frozen = set()
        elif freeze == "backbone":
            self.frozen = {n for n in names if not matches(n, [head])}
        else:
            unknown = [p for p in freeze if not any(matches(n, [p]) for n in names)]
            if unknown:
                raise KilnError(f"model.freeze: {', '.join(map(repr, unknown))} match no parameter; names start "
                                f"with: {', '.join(sorted({n.split('.')[0] for n in names}))}")
            self.frozen = {n for n in names if matches(n, list(freeze))}
        self.current: set[str] | None = None
        self.frozen_norms: list[nn.Module] = []

    def frozen_in(self, epoch: int) -> set[str]:
        """Frozen parameter names in `epoch` (1-based, as model.unfreeze_at_epoch counts)."""
        if self.unfreeze_at_epoch is not None and epoch >= self.unfreeze_at_epoch:
            return set()
        return self.frozen

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called after the model was put in training mode: (un)freeze, and keep frozen BatchNorm in eval."""
        frozen = self.frozen_in(epoch)
        if frozen != self.current:
            self._apply(frozen, epoch)
        for module in self.frozen_norms:
            module.eval()

    def _apply(self, frozen: set[str], epoch: int) -> None:
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in frozen)
        self.frozen_norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                             and list(m.parameters(recurse=False))
                             and not any(p.requires_grad for p in m.parameters(recurse=False))]
        if self.current is not None or frozen:
            total = sum(p.numel() for p in self.model.parameters())
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            log.info("epoch %d: %s trainable parameters of %s%s", epoch, f"{trainable:,}", f"{total:,}",
                     " (unfrozen)" if self.current and not frozen else "")
        self.current = frozen
