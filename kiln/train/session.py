"""One training run or evaluation, end to end: config -> data -> model -> optim -> fit -> test.

`train()` and `test()` are what the CLI calls; they are plain functions so that
tuning and tests can call them too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln.config import Config, profile_summary
from kiln.core import dist
from kiln.core.checkpoint import Checkpoint
from kiln.core.errors import KilnError, TrainingInterrupted, TrainingStopped
from kiln.core.formats import TestResults
from kiln.core.state import seed_everything
from kiln.core.user_code import names_code
from kiln.data import Data, fresh_encoder
from kiln.data.inputs import inputs_of
from kiln.data.mixing import check_mixable
from kiln.models import describe
from kiln.runs import RunDir, RunLock, RunStatus
from kiln.track import Trackers
from kiln.track.console import EpochProgress
from kiln.track.run_trackers import open_trackers
from kiln.train import strategy
from kiln.train.build import Outputs, build_trainer
from kiln.train.callbacks import Callback
from kiln.train.callbacks.remote import push_run
from kiln.train.device import resolve_backend
from kiln.train.evaluation import run_evaluation
from kiln.train.first_batch import check_first_batch
from kiln.train.loop import Trainer, fit
from kiln.train.plan import RunPlan, check_before_data
from kiln.train.plan import epochs_from_steps as epochs_from_steps  # where callers found it before the plan owned it
from kiln.train.resume import finish, resume_state, warn_changed
from kiln.train.trained import Trained

log = logging.getLogger("kiln")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    test_metrics: TestResults | None = None  # test_metrics.json
    config: Config | None = None  # what the run trained with (the plan's config, with what kiln derived)






def train(cfg: Config, *, resume: Path | None = None, run_dir: Path | None = None, quiet: bool = False,
          callbacks: list[Callback] | None = None) -> RunResult:
    """Train `cfg` in a new run folder (or in `run_dir`), or continue the run in `resume`. `callbacks` run after
    kiln's own (e.g. a tuner's reporter).

    Under torchrun every rank calls this; rank 0 alone writes the run folder.
    """
    from kiln.train.preflight import preflight

    preflight(cfg, resuming=resume is not None)
    check_before_data(cfg)
    plan = RunPlan.of(cfg)
    strategy.check(cfg, plan.device)
    dist.setup(plan.device, resolve_backend(cfg.trainer.backend, plan.device), cfg.trainer.dist_timeout)
    try:
        dist.check_same_config(cfg.model_dump(mode="json"))
        if run_dir is not None and RunDir(run_dir).is_run:
            resume = Path(run_dir)  # e.g. a worker restarted by torchrun's --max-restarts: finish that run
        return _train(plan, resume, run_dir, quiet, callbacks or [])
    finally:
        dist.teardown()


def _train(plan: RunPlan, resume: Path | None, run_dir: Path | None, quiet: bool,
           extra_callbacks: list[Callback]) -> RunResult:
    cfg, proc = plan.config, plan.proc
    checkpoint_state = None
    if resume is not None and RunDir(resume).has_last():
        checkpoint_state = resume_state(RunDir(resume), cfg, proc.world_size)
    elif resume is not None:
        log.warning("%s has no checkpoint yet (it stopped before its first epoch ended): training it from the "
                    "beginning", resume)
    saved = checkpoint_state.loop if checkpoint_state is not None else None
    if resume is not None and checkpoint_state is not None and saved is not None and saved.finished \
            and cfg.trainer.epochs <= saved.epoch:
        metrics, test_metrics = finish(RunDir(resume), plan.given, proc, checkpoint_state)
        return RunResult(Path(resume), metrics, test_metrics, config=plan.given)

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    # what this run trains with, derived from the given config and its data (a resumed run's config.yaml already
    # holds every derived value, so nothing is derived again)
    data = plan.data(vocab=RunDir(resume).vocab() if resume else fresh_encoder(cfg))
    plan = plan.trained_on(data, resuming=resume is not None)
    run, lock, made = _run_folder(plan, resume, run_dir, data)
    # Resuming a run that never saved a checkpoint starts over: its epoch-0 files are rewritten, not appended to.
    start = Start(checkpoint_state, saved.epoch if saved is not None else (0 if resume is not None else None))
    try:
        return _train_in(run, plan, data, start, quiet, extra_callbacks)
    except KilnError:
        if made and not run.status_file.is_file():  # refused before training began: leave no half-made run
            lock.release()
            run.discard()
        raise
    finally:
        lock.release()


@dataclass(frozen=True)
class Start:
    """Where training starts: the checkpoint it continues from (None: the beginning) and the epoch its metric files
    end at (None: a new run; 0: a resumed run that never saved a checkpoint, whose epoch-0 files are rewritten)."""

    state: Checkpoint | None = None
    epoch: int | None = None


def _train_in(run: RunDir, plan: RunPlan, data: Data, start: Start, quiet: bool,
              extra_callbacks: list[Callback]) -> RunResult:
    """Train in the run folder this process holds (rank 0) or shares."""
    cfg, proc = plan.config, plan.proc
    if profile_summary(cfg):
        log.info("on this machine: %s", profile_summary(cfg))
    trackers, file_log = open_trackers(cfg, run, start.epoch) if proc.is_main else (Trackers([]), None)
    progress = proc.is_main and EpochProgress.wanted(cfg.log.progress, quiet)
    trainer = build_trainer(plan, data, pretrained=start.state is None,
                            outputs=Outputs(run, trackers, extra_callbacks, progress))
    model = trainer.model
    try:
        _ready(trainer, plan, run, start.state)
        trackers.log_config(cfg.model_dump(mode="json"))
        status = {"world_size": proc.world_size, "global_batch_size": trainer.global_batch_size,
                  "parameters": sum(p.numel() for p in model.parameters())}
        with _status_kept(run, trainer, status, proc.is_main):
            return _fit_and_test(plan, run, trainer, model, trackers)
    finally:
        trackers.close()
        if file_log is not None:
            log.removeHandler(file_log)
            file_log.close()
        if cfg.log.remote and proc.is_main:  # the final status, test metrics and the whole log
            push_run(cfg.log.remote, run)


def _ready(trainer: Trainer, plan: RunPlan, run: RunDir, state: Checkpoint | None) -> None:
    """Say what trains on what; check your own Dataset's first batch against the model; restore the checkpoint a
    resume continues from; wrap the model for the run's strategy."""
    data, proc, model = trainer.data, plan.proc, trainer.model
    log.info("run folder: %s", run)
    log.info("data: %s — %s | %s loader | device %s, precision %s%s", data.info.name,
             ", ".join(f"{k} {v:,}" for k, v in data.sizes.items()), data.loader, plan.device, trainer.precision,
             f" | {proc.world_size} processes, global batch {trainer.global_batch_size}" if proc.distributed else "")
    log.info("model: %s", describe(model))
    if inputs_of(data.info).own_code or names_code(plan.config.task.name):  # your code meets the model first
        check_first_batch(trainer)
    if trainer.mix is not None:  # inputs that cannot be blended (token ids): said before the first step
        check_mixable(next(iter(data.require("train").epoch(0)))[0], plan.config.data.augment)
    if state is not None:
        warn_changed(state, plan.config, proc.world_size)
        trainer.load_checkpoint(state)
        trainer.state.finished = False
        log.info("resumed from %s at epoch %d, batch %d (step %d)", run.last,
                 trainer.state.epoch + 1, trainer.state.batch, trainer.state.step)
    trainer.model = plan.strategy.wrap(model, plan.device, frozen=plan.config.model.freeze != "none")


def _fit_and_test(plan: RunPlan, run: RunDir, trainer: Trainer, model: torch.nn.Module,
                  trackers: Trackers) -> RunResult:
    """fit, the task's step after it (a threshold tuned on validation), and the best checkpoint's test."""
    with hang_watch(run, plan):
        metrics = fit(trainer)
    dist.barrier()  # rank 0 has written best.pt before anyone reads it
    result = RunResult(run.path, metrics, config=plan.config)
    if trainer.task.wants_validation_predictions():
        plan = _after_fit(plan, run, trainer)
        result.config = plan.config
    if plan.config.trainer.test_after_fit:  # every rank evaluates its shard of the test split
        result.test_metrics = _test_best(plan, run, model, trackers)
    return result


@contextmanager
def hang_watch(run: RunDir, plan: RunPlan) -> Iterator[None]:
    """Under several processes, a watch that ends a stalled rank with a report (kiln.core.hang) while training
    runs."""
    if not plan.proc.distributed:
        yield
        return
    from kiln.core.hang import HangWatch

    watch = HangWatch(run.path, plan.proc.rank, plan.config.trainer.dist_timeout)
    watch.start()
    try:
        yield
    finally:
        watch.stop()


@contextmanager
def _status_kept(run: RunDir, trainer: Trainer, status: dict[str, Any], is_main: bool) -> Iterator[None]:
    """status.json says running while the body runs, then how it ended: finished, interrupted (with the resume
    command in the error), stopped or failed. Rank 0 writes it."""
    def write(state: RunStatus, **extra: Any) -> None:
        if is_main:
            run.write_status(state, epoch=trainer.state.epoch, **extra, **status)

    write(RunStatus.RUNNING, epochs=trainer.epochs)
    try:
        yield
    except TrainingInterrupted as e:
        write(RunStatus.INTERRUPTED, batch=trainer.state.batch)
        done = trainer.state.epoch  # full epochs, as status.json's epoch counts them
        where = f"after epoch {done}" if not trainer.state.batch else \
            f"after {done} full epoch(s) and {trainer.state.batch} batch(es) of epoch {done + 1}"
        what = "preempted (SIGUSR1)" if e.preempted else "interrupted"
        raise TrainingInterrupted(f"training {what}; last.pt saved {where}. Resume with: kiln train --resume {run} "
                                  "(or --resume auto)", preempted=e.preempted, run=str(run)) from None
    except TrainingStopped:
        write(RunStatus.STOPPED)
        raise
    except BaseException:
        write(RunStatus.FAILED)
        raise
    write(RunStatus.FINISHED)


def _run_folder(plan: RunPlan, resume: Path | None, run_dir: Path | None,
                data: Data) -> tuple[RunDir, RunLock, bool]:
    """The run folder, made and locked by rank 0 (before it writes anything there) and shared with the other
    ranks; holds the plan's config. The flag: this process made the folder (a new run, not one given)."""
    cfg, proc, made = plan.config, plan.proc, False
    if resume:
        folder: Path | None = Path(resume)
    elif proc.is_main:
        made = run_dir is None or not Path(run_dir).exists()
        folder = Path(run_dir) if run_dir else RunDir.create(cfg.log.dir, cfg.name).path
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = None
    run = RunDir(dist.broadcast(str(folder) if folder else None))
    lock = RunLock(run)
    if proc.is_main:
        lock.acquire()
    if proc.is_main:
        run.write_config(cfg, plan.comments())
        if data.vocab is not None:
            run.save_vocab(data.vocab)
    return run, lock, made








def _after_fit(plan: RunPlan, run: RunDir, trainer: Trainer) -> RunPlan:
    """The task's post-training step (multilabel: task.tune_threshold) on the validation predictions of the best
    checkpoint's weights: the plan with the task settings it returns, recorded in the run's config.yaml (test,
    predict and export use them). Under DDP rank 0's share of the validation split decides, for every rank."""
    from kiln.core.state import unwrap
    from kiln.train.evaluation import collect_predictions

    if trainer.data.val is None:
        log.warning("task: there is no validation split to tune on after training; keeping the task's settings as "
                    "configured")
        return plan
    model = unwrap(trainer.model)
    plan.strategy.load_weights(model, run.checkpoint("best"))
    probs, targets = collect_predictions(model, trainer.data.val, trainer.task, trainer.device, trainer.precision)
    settings: dict[str, Any] = dist.broadcast(trainer.task.after_fit_settings(probs, targets) or {})
    for key, value in settings.items():
        shown = ", ".join(f"{n} {v:.2f}" for n, v in zip(trainer.data.info.class_names, value)) \
            if isinstance(value, list) else value
        log.info("task.%s after training (best validation score): %s", key, shown)
    plan = plan.then(plan.config.with_values({f"task.{k}": v for k, v in settings.items()}),
                     "the validation predictions after training")
    if plan.proc.is_main and settings:
        run.write_config(plan.config, plan.comments())
    return plan


def _test_best(plan: RunPlan, run: RunDir, model: torch.nn.Module, trackers: Trackers) -> TestResults | None:
    """The best checkpoint's weights in the model trained here, on this rank's shard of the test split (None when
    the data has no test split, e.g. your own Dataset without one)."""
    data = plan.data(("test",), vocab=run.vocab())
    if data.test is None:
        log.info("no test split: the final test is skipped")
        return None
    path = run.checkpoint("best")
    state = plan.strategy.load_weights(model, path)
    trained = Trained(run, plan.config, model, data.info, plan.device, plan.precision, path, state)
    results = run_evaluation(trained, data, write=plan.proc.is_main)
    trackers.log_test({k: v for k, v in results.items() if isinstance(v, float)})
    return results
