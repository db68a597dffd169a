"""One trial of a search (`Objective`): an ordinary kiln run with the sampled values, reporting its metric after
every epoch so the pruner can stop it; and `optimize`, which runs trials until the study has enough."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.commands.tune.lease import held, more_to_run, reap, until_enough
from kiln.commands.tune.space import TuneConfig, trial_config
from kiln.commands.tune.study import finished_trials, is_shared, make_pruner, make_sampler, make_storage
from kiln.core.errors import KilnError, TrainingInterrupted, TrainingStopped, first_line
from kiln.runs import RunDir, RunStatus
from kiln.train.callbacks import LambdaCallback

log = logging.getLogger("kiln")
TRIAL_ERRORS = (KilnError, TrainingStopped, RuntimeError, ValueError, TypeError, ArithmeticError)


def suggest(trial, tune: TuneConfig) -> dict[str, Any]:
    return {key: p.optuna_value(trial, key) for key, p in tune.space.items()}


class Objective:
    """One trial: a kiln run with the sampled values, reporting the metric each epoch for pruning."""

    def __init__(self, tune: TuneConfig, raw: dict[str, Any], tune_dir: Path):
        self.tune, self.raw, self.tune_dir = tune, raw, tune_dir

    def __call__(self, trial) -> float:
        import optuna

        from kiln.train import session

        values = suggest(trial, self.tune)
        # ranked by validation; tested only to compare
        cfg = trial_config(self.raw, values).with_values({"trainer.test_after_fit": self.tune.test_trials})
        run_dir = self.tune_dir / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("pid", os.getpid())
        history: list[float] = []

        def report(epoch: int, metrics: dict[str, float]) -> None:
            value = metrics[self.tune.metric]
            history.append(value)
            trial.set_user_attr("epochs", epoch)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} ({self.tune.metric}={value:.4f})")

        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
        try:
            with held(trial.study, trial):  # other workers on the study see this one is alive
                session.train(cfg, run_dir=run_dir, quiet=True, callbacks=[LambdaCallback(on_epoch_end=report)])
        except optuna.TrialPruned:
            RunDir(run_dir).write_status(RunStatus.PRUNED, epoch=len(history))
            raise
        except TRIAL_ERRORS as e:  # NaN, a sampled value the model rejects, ...: a failed trial
            trial.set_user_attr("error", first_line(e)[:500])
            log.warning("trial %d failed: %s", trial.number, first_line(e))
            raise
        best = max(history) if self.tune.mode == "max" else min(history)
        return best


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def quiet_interrupts() -> None:
    """Optuna logs a trial that ends by Ctrl-C (or SIGTERM) as failed, with its traceback; kiln stops the search
    cleanly and says how to resume it instead, so those records are dropped (other errors keep their traceback)."""
    optuna_log = logging.getLogger("optuna")
    for handler in optuna_log.handlers:
        if not any(isinstance(f, _DropInterrupts) for f in handler.filters):
            handler.addFilter(_DropInterrupts())


class _DropInterrupts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        kind = record.exc_info[0] if record.exc_info else None
        return not (kind is not None and issubclass(kind, (KeyboardInterrupt, TrainingInterrupted)))


@dataclass(frozen=True)
class Share:
    """One worker's part of a search (`kiln tune --workers`): its CPU threads, how many trials it runs and its
    index, which seeds its sampler. The default: the search's only worker, running what the study still lacks."""

    threads: int | None = None
    quota: int | None = None
    worker: int = 0


def optimize(tune: TuneConfig, raw: dict[str, Any], tune_dir: Path, storage: str, study_name: str,
             share: Share = Share()) -> None:
    """Run trials until the study holds `tune.trials` finished (complete or pruned) ones."""
    import optuna

    threads, quota, worker = share.threads, share.quota, share.worker
    quiet_interrupts()
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage),
                              sampler=make_sampler(tune, worker, is_shared(storage)),
                              pruner=make_pruner(tune, trial_config(raw, {}).trainer.epochs))
    reap(study)  # trials of workers that died before this one started
    done = until_enough(tune.trials)
    remaining = quota if quota is not None else tune.trials - finished_trials(study)
    if remaining <= 0:
        return
    from sqlalchemy.exc import OperationalError

    ran: list[int] = []
    busy = 0
    while busy < 5:
        # A trial that fails is recorded as failed and the search goes on; an interrupt stops the search.
        # On a shared study this worker runs until the study is complete (it may retry a dead worker's trial).
        budget = None if is_shared(storage) and quota is None else remaining - len(ran)
        try:
            study.optimize(Objective(tune, raw, tune_dir), n_trials=budget, catch=TRIAL_ERRORS,
                           callbacks=[done, lambda study, trial: ran.append(trial.number)], gc_after_trial=True)
        except OperationalError as e:  # a shared SQLite file briefly busy with another worker's write
            log.warning("study storage busy (%s); retrying", first_line(e))
            busy += 1
            time.sleep(1.0)
            continue
        # A grid sampler stops the study once every point is done or running — also while another worker's
        # running trial may still fail and need running again.
        if budget is not None or not more_to_run(study, tune.trials):
            return
