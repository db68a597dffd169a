"""Checkpointing: last every epoch (and when a stop is asked for), best whenever the monitored metric improves,
and the top-k epochs as epoch-NNN — files (.pt), or under FSDP folders of shards (.dcp) every rank writes its own
part of. Its own state (the best value, the kept epochs) resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.config import CheckpointConfig, watched
from kiln.core import dist
from kiln.core.state import copy_checkpoint, remove_checkpoint
from kiln.runs import RunDir
from kiln.train.callbacks.base import Callback
from kiln.train.callbacks.early_stopping import Monitor

if TYPE_CHECKING:
    from kiln.train.loop import Trainer


class ModelCheckpoint(Callback):
    state_key = "checkpoint"

    def __init__(self, cfg: CheckpointConfig, run: RunDir):
        """On every rank of a multi-process run: all take part in gathering (or writing the shards of) each
        checkpoint; rank 0 writes the files and keeps the folder in order."""
        self.run, self.keep_top_k, self.keep_last_k = run, cfg.keep_top_k, cfg.keep_last_k
        self.writes = dist.current().is_main
        self.monitor = Monitor(*watched(cfg))
        self.top: list[tuple[float, int]] = []  # (value, epoch) of the best epochs' epoch-NNN checkpoints
        self.recent: list[int] = []  # the last epochs' (keep_last_k)
        self.improved = False  # at the last epoch end

    def save_last(self, trainer: Trainer) -> None:
        checkpoint, shards = trainer.checkpoint(), trainer.saves_shards
        path = self.run.checkpoint_path("last", sharded=shards)
        if shards or self.writes:  # every rank writes its shards; a file is rank 0's
            checkpoint.save(path)
        if self.writes:  # a resume under another strategy leaves the other kind behind: it is stale now
            remove_checkpoint(self.run.checkpoint_path("last", sharded=not shards))

    def on_fit_start(self, trainer: Trainer) -> None:
        """A run resumed at an epoch end: make the copies of that epoch again. A kill between writing last and
        copying it to best (or epoch-NNN) leaves an older best, while the restored monitor already names this
        epoch as the best; without the copy the final test would score the older weights."""
        epoch = trainer.state.epoch
        if self.writes and epoch and not trainer.state.batch and self.run.has_last():
            self.improved = self.monitor.best_epoch == epoch
            self._copies(epoch)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """Update the monitor, then write checkpoints of the trainer's state (which includes this one's)."""
        self.improved = self.monitor.update(metrics, epoch)
        if self.keep_top_k:
            self.top.append((metrics[self.monitor.metric], epoch))
            self.top.sort(key=lambda t: t[0], reverse=self.monitor.mode == "max")
        self.save_last(trainer)
        if self.writes:
            self._copies(epoch)

    def _copies(self, epoch: int) -> None:
        last = self.run.last
        if self.improved:
            self._copy(last, "best")
        if not (self.keep_top_k or self.keep_last_k):
            return
        self.top = self.top[:self.keep_top_k]
        if self.keep_last_k and epoch not in self.recent:
            self.recent = [*self.recent, epoch][-self.keep_last_k:]
        kept = {e for _, e in self.top} | set(self.recent)
        if epoch in kept:
            self._copy(last, f"epoch-{epoch:03d}")
        for path in self.run.epoch_checkpoints():
            if RunDir.epoch_of(path) not in kept:
                remove_checkpoint(path)

    def _copy(self, last: Path, name: str) -> None:
        shards = last.is_dir()
        copy_checkpoint(last, self.run.checkpoint_path(name, sharded=shards))
        remove_checkpoint(self.run.checkpoint_path(name, sharded=not shards))

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save_last(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.save_last(trainer)  # marked finished

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor.state_dict(), "top": [list(t) for t in self.top], "recent": self.recent}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state["monitor"])
        self.top = [tuple(t) for t in state["top"]]
        self.recent = list(state.get("recent", []))
