"""Several `kiln tune` workers on one study without a database server: each running trial holds a lease (a
timestamp in the study, renewed by its worker every few seconds). A trial whose lease ran out belongs to a worker
that died (killed, its machine gone): any other worker marks it failed and queues its values again, so the study
still gets every trial it asked for. Optuna's journal storage has no heartbeat of its own; this is kiln's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("kiln")
LEASE_KEY = "kiln_lease"


def lease_seconds() -> float:
    """How long a running trial's worker may stay silent before the trial is taken for dead."""
    return float(os.environ.get("KILN_TUNE_LEASE_SECONDS", "60"))


@contextmanager
def held(study, trial) -> Iterator[None]:
    """Renew `trial`'s lease while the block runs (a thread: training does not have to call anything)."""
    stop = threading.Event()

    def renew() -> None:
        while True:
            try:
                study._storage.set_trial_user_attr(trial._trial_id, LEASE_KEY, time.time())
            except Exception as e:  # noqa: BLE001 — the trial ended meanwhile, or the file is briefly busy
                log.debug("lease of trial %d not renewed: %s", trial.number, e)
            if stop.wait(lease_seconds() / 4):
                return

    thread = threading.Thread(target=renew, name=f"kiln-lease-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def reap(study) -> int:
    """Trials whose lease ran out: marked failed, their values queued again. Returns how many."""
    import optuna
    from optuna.trial import TrialState

    now, limit, reaped = time.time(), lease_seconds(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        renewed = t.user_attrs.get(LEASE_KEY, t.datetime_start.timestamp() if t.datetime_start else now)
        if now - renewed <= limit:
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001 — another worker reaped it first (or it just finished)
            continue
        reason = f"trial {t.number}'s worker stopped renewing its lease for {now - renewed:.0f} s (killed?)"
        if not isinstance(study.sampler, optuna.samplers.GridSampler):  # a grid samples its failed points again
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "retry_reason": reason})
        log.warning("trial %d: its worker is gone (no lease renewal for %.0f s); marked failed, its values to be "
                    "run again", t.number, now - renewed)
        reaped += 1
    return reaped


def more_to_run(study, trials: int) -> bool:
    """Whether this worker should start another trial: the study has fewer than `trials` finished ones and
    nobody else is running the rest. While others' running trials would complete it, wait: one of them may still
    fail (its lease runs out), and then its values are this worker's to run."""
    from optuna.trial import TrialState

    while True:
        reap(study)
        counts = {s: len(study.get_trials(deepcopy=False, states=(s,)))
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)}
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if finished >= trials:
            return False
        if counts[TrialState.WAITING] or finished + counts[TrialState.RUNNING] < trials:
            return True  # a queued retry, or trials nobody has started (a grid's failed points too)
        time.sleep(min(2.0, lease_seconds() / 4))


def until_enough(trials: int):
    """An Optuna callback that stops this worker once the study has `trials` finished trials, counting the ones
    other workers are running (see more_to_run)."""

    def callback(study, trial) -> None:
        if not more_to_run(study, trials):
            study.stop()

    return callback


def status_lines(path: str) -> list[str]:
    """`kiln tune --status`: each study in a journal file (journal:PATH or PATH) or a tune folder's study.db —
    trials by state, the best so far, and every running trial with the age of its lease."""
    from pathlib import Path

    import optuna
    from optuna.trial import TrialState

    from kiln.commands.tune.study import JOURNAL, STUDY_FILE, make_storage, storage_url
    from kiln.core.errors import KilnError

    given = Path(path.removeprefix(JOURNAL))
    if given.is_dir() and (given / STUDY_FILE).is_file():
        url = storage_url(given)
    elif given.is_file():
        url = JOURNAL + str(given)
    else:
        raise KilnError(f"--status {path}: neither a tune folder (with {STUDY_FILE}) nor a journal file")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(url)
    lines = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        lines.append(f"study {summary.study_name}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        if summary.best_trial is not None:
            best = summary.best_trial
            lines.append(f"  best: trial {best.number}, value {best.value:.4g}, " +
                         ", ".join(f"{k}={v}" for k, v in best.params.items()))
        for t in trials:
            if t.state == TrialState.RUNNING:
                renewed = t.user_attrs.get(LEASE_KEY)
                age = f"lease renewed {time.time() - renewed:.0f} s ago" if renewed else "no lease yet"
                lines.append(f"  running: trial {t.number} (pid {t.user_attrs.get('pid', '?')}, {age}) " +
                             ", ".join(f"{k}={v}" for k, v in t.params.items()))
    return lines or [f"{path}: no study yet"]
