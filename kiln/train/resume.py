"""Resuming a run: the checkpoint it continues from (the newest intact one when last is corrupt), what changed
since it was saved, and a run whose epochs were all done before it stopped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kiln.config import Config, flatten
from kiln.core import dist
from kiln.core.checkpoint import Checkpoint
from kiln.core.errors import CorruptCheckpoint, KilnError
from kiln.runs import RunDir, RunLock, RunStatus
from kiln.train.strategy import Strategy

log = logging.getLogger("kiln")


def resume_state(run: RunDir, cfg: Config, world_size: int) -> Checkpoint:
    """last, or, when it is corrupt, the newest intact checkpoint of the run (with a warning)."""
    def read(path: Path) -> Checkpoint:
        return Strategy.of(cfg.trainer, world_size).resume_state(path)

    try:
        return read(run.last)
    except CorruptCheckpoint as e:
        log.warning("%s", e)
    intact = []
    for path in [*run.epoch_checkpoints(), run.best]:
        try:
            intact.append((read(path), path))
        except KilnError:
            continue
    if not intact:
        raise KilnError(f"{run.last} is corrupt and {run} has no other intact checkpoint to resume from; "
                        f"start the run again") from None
    state, path = max(intact, key=lambda sp: (sp[0].loop.step, sp[0].loop.epoch))
    log.warning("resuming from %s (epoch %d), the newest intact checkpoint of %s", path.name, state.loop.epoch, run)
    return state


def warn_changed(checkpoint: Checkpoint, cfg: Config, world_size: int) -> None:
    """A run resumed with another config or world size is no longer exact; say what changed."""
    if checkpoint.world_size != world_size:
        log.warning("resuming a %d-process run with %d processes: training continues from the same state, but "
                    "batches and their order differ from the original run from here on",
                    checkpoint.world_size, world_size)
    before, after = flatten(checkpoint.config or {}), flatten(cfg.model_dump(mode="json"))
    changed = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in after if before.get(k) != after.get(k)]
    if changed:
        log.warning("resuming with a changed config (the result will differ from an uninterrupted run): %s",
                    "; ".join(changed))


def finish(run: RunDir, cfg: Config, proc: dist.ProcessInfo, state: Checkpoint) -> tuple[dict[str, float], Any]:
    """Resume of a run whose epochs are all done: finish what is left (the test and the status), or say that
    nothing is. (The last epoch's metrics, the test results.)"""
    epochs = state.loop.epoch
    test_missing = cfg.trainer.test_after_fit and run.test_metrics() is None
    if run.state() is RunStatus.FINISHED and not test_missing:
        raise KilnError(f"{run} already finished all {epochs} epochs; to train longer, resume with "
                        f"trainer.epochs=N (N > {epochs})")
    if proc.distributed:
        raise KilnError(f"{run} trained all {epochs} epochs but stopped before its end: finish it with one "
                        f"process (kiln train --resume {run}) or run `kiln test {run}`")
    from kiln.track.files import read_metrics
    from kiln.train.evaluation import run_test

    lock = RunLock(run).acquire()
    try:
        log.info("%s trained all %d epochs; finishing what the interrupted run left undone", run, epochs)
        test_metrics = run_test(run.path) if test_missing else run.test_metrics()
        run.write_status(RunStatus.FINISHED, epoch=epochs, world_size=state.world_size,
                         global_batch_size=state.meta.global_batch_size if state.meta else None)
    finally:
        lock.release()
    rows = read_metrics(run)
    return (rows[-1] if rows else {}), test_metrics
