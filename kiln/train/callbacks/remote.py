"""log.remote: the run folder mirrored to an object store (kiln.core.mirror) when the run starts, after each
checkpoint, when it is interrupted, and once more when it ends (its status, test metrics and log complete), by the
main process. A push that fails mid-run is a warning — training goes on and the next push tries again; the
store is checked before training starts (kiln.train.preflight)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kiln.core import dist
from kiln.core.errors import KilnError
from kiln.runs import RunDir
from kiln.runs.remote import mirror_of
from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.core.mirror import Mirror
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")


def push_run(remote: str, run: RunDir, mirror: Mirror | None = None) -> None:
    """Push the run folder's changes; a failure is logged, not raised."""
    try:
        published = (mirror or mirror_of(remote, run)).push()
    except KilnError as e:
        log.warning("log.remote: %s (training goes on; the next push tries again)", e)
        return
    if published:
        log.debug("log.remote: pushed %s", ", ".join(published))


class RemoteMirror(Callback):
    """Runs after the checkpoint and status callbacks, so each push carries the epoch's checkpoints."""

    def __init__(self, remote: str, run: RunDir):
        self.remote, self.run = remote, run
        self.mirror = mirror_of(remote, run)
        self.writes = dist.current().is_main

    def _push(self) -> None:
        if self.writes:
            push_run(self.remote, self.run, self.mirror)

    def on_fit_start(self, trainer: Trainer) -> None:
        self._push()

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self._push()

    def on_interrupt(self, trainer: Trainer) -> None:
        self._push()
