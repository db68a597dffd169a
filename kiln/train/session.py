"""One training run or evaluation, end to end: config -> data -> model -> optim -> fit -> test.

`train()` and `test()` are what the CLI calls; they are plain functions so that
tuning and tests can call them too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln.config import Config, flatten, profile_summary, watched, with_default_monitors
from kiln.core import dist
from kiln.core.checkpoint import Checkpoint
from kiln.core.errors import CorruptCheckpoint, KilnError, TrainingInterrupted, TrainingStopped
from kiln.core.formats import TestResults
from kiln.core.state import seed_everything
from kiln.data import Data, fresh_encoder
from kiln.data.loaders import split_targets
from kiln.data.registry import known_num_classes
from kiln.models import describe
from kiln.runs import RunDir, RunLock, RunStatus
from kiln.tasks import build_task, resolve_task_settings
from kiln.track import Trackers
from kiln.track.console import EpochProgress, add_log_file
from kiln.track.files import MetricsFiles
from kiln.train import strategy
from kiln.train.build import Outputs, build_trainer
from kiln.train.callbacks import Callback
from kiln.train.device import resolve_backend, resolve_device
from kiln.train.evaluation import run_evaluation
from kiln.train.loop import Trainer, fit
from kiln.train.plan import RunPlan
from kiln.train.strategy import Strategy
from kiln.train.trained import Trained

log = logging.getLogger("kiln")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    test_metrics: TestResults | None = None  # test_metrics.json
    config: Config | None = None  # what the run trained with (the plan's config, with what kiln derived)


def check_monitors(cfg: Config, num_classes: int | None) -> None:
    """Reject, before training, a monitored metric that this run will never produce."""
    has_val = cfg.data.val_split != 0 or cfg.trainer.overfit_batches > 0
    available = build_task(cfg.task, num_classes).metric_names(has_val)
    if available is None:  # not known before the data is read (text_csv); checked again after loading
        return
    monitored = {"trainer.checkpoint.monitor": watched(cfg.trainer.checkpoint)[0]}
    if cfg.trainer.early_stopping.enabled:
        monitored["trainer.early_stopping.monitor"] = cfg.trainer.early_stopping.monitor
    for key, metric in monitored.items():
        if metric not in available:
            why = " (there is no validation split: data.val_split=0)" if metric.startswith("val/") and not has_val else ""
            raise KilnError(f"{key}={metric!r} is a metric this run will never produce{why}; "
                            f"available: {', '.join(available)}")


def check_targets(cfg: Config, data: Data) -> None:
    """Reject, before the run folder exists, data the task cannot learn from (one class, one label)."""
    from kiln.data.loaders import split_labels

    where = f"data.name={cfg.data.name}" + (f" (data.root={cfg.data.root})" if cfg.data.root else "")
    train = split_labels(data.train) if data.train is not None else None
    build_task(cfg.task, data.info.num_classes).check_targets(data.info.class_names, train, where)


def train(cfg: Config, *, resume: Path | None = None, run_dir: Path | None = None, quiet: bool = False,
          callbacks: list[Callback] | None = None) -> RunResult:
    """Train `cfg` in a new run folder (or in `run_dir`), or continue the run in `resume`. `callbacks` run after
    kiln's own (e.g. a tuner's reporter).

    Under torchrun every rank calls this; rank 0 alone writes the run folder.
    """
    from kiln.train.preflight import preflight

    preflight(cfg, resuming=resume is not None)
    check_monitors(with_default_monitors(cfg),
                   len(cfg.data.classes) if cfg.data.classes else known_num_classes(cfg.data.name))
    proc = dist.current()
    device = resolve_device(cfg.trainer.device, proc.local_rank, proc.local_world_size, cfg.trainer.backend)
    strategy.check(cfg, device)
    dist.setup(device, resolve_backend(cfg.trainer.backend, device))
    try:
        dist.check_same_config(cfg.model_dump(mode="json"))
        if run_dir is not None and RunDir(run_dir).config_file.is_file():
            resume = Path(run_dir)  # e.g. a worker restarted by torchrun's --max-restarts: finish that run
        return _train(cfg, proc, device, resume, run_dir, quiet, callbacks or [])
    finally:
        dist.teardown()


def _train(cfg: Config, proc: dist.ProcessInfo, device: torch.device, resume: Path | None, run_dir: Path | None,
           quiet: bool, extra_callbacks: list[Callback]) -> RunResult:
    checkpoint_state = None
    if resume is not None and RunDir(resume).has_last():
        checkpoint_state = _resume_state(RunDir(resume), cfg, proc.world_size)
    elif resume is not None:
        log.warning("%s has no checkpoint yet (it stopped before its first epoch ended): training it from the "
                    "beginning", resume)
    saved = checkpoint_state.loop if checkpoint_state is not None else None
    if resume is not None and checkpoint_state is not None and saved is not None and saved.finished \
            and cfg.trainer.epochs <= saved.epoch:
        return _finish(RunDir(resume), cfg, proc, checkpoint_state)

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    plan, data = _plan(RunPlan.of(cfg, device, proc), resume)
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


def _plan(plan: RunPlan, resume: Path | None) -> tuple[RunPlan, Data]:
    """What this run trains with, derived step by step from the given config and its data (a resumed run's
    config.yaml already holds every derived value, so nothing is derived again), and the data it trains on."""
    cfg = plan.config
    data = plan.data(vocab=RunDir(resume).vocab() if resume else fresh_encoder(cfg))
    plan = plan.then(cfg.with_values({f"data.{k}": v for k, v in data.derived.items()}), "the training data")
    check_monitors(plan.config, data.info.num_classes)
    check_targets(plan.config, data)
    if resume is None:
        plan = plan.then(epochs_from_steps(plan.config, len(data.require("train"))), "the training steps")
    task = resolve_task_settings(plan.config.task, lambda: split_targets(data.require("train")))
    plan = plan.then(plan.config.with_values({"task": task}), "the training split's targets")
    return plan, data


def epochs_from_steps(cfg: Config, train_batches: int) -> Config:
    """`cfg` with trainer.max_steps / min_steps turned into trainer.epochs (rounded up)."""
    tc = cfg.trainer
    steps = tc.max_steps or tc.min_steps
    if tc.fast_dev_run:  # the trainer runs one short epoch whatever the epochs or steps: say that, not a conversion
        log.info("trainer.fast_dev_run: 1 epoch of at most 2 training and 2 validation batches (trainer.epochs%s "
                 "left aside)", " and the step budget" if steps else "")
        return cfg
    if steps is None:
        return cfg
    from kiln.train.loop import batches_per_epoch

    steps_per_epoch = max(1, -(-batches_per_epoch(tc, train_batches) // tc.accumulate))
    needed = max(1, -(-steps // steps_per_epoch))
    epochs = needed if tc.max_steps else max(tc.epochs, needed)
    change = f"trainer.epochs {tc.epochs} -> {epochs}" if epochs != tc.epochs else f"{epochs} epochs"
    log.info("trainer.%s=%d at %d steps per epoch: %s (set trainer.epochs on the command line to run that many)",
             "max_steps" if tc.max_steps else "min_steps", steps, steps_per_epoch, change)
    return cfg.with_values({"trainer.epochs": epochs}) if epochs != tc.epochs else cfg


def _resume_state(run: RunDir, cfg: Config, world_size: int) -> Checkpoint:
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


def check_first_batch(t: Trainer) -> None:
    """Your own Dataset and model meet before training starts: the first training batch goes through the model
    (eval mode, no gradients, nothing changes) and the loss, so a mismatch is a message naming the samples and
    their shapes instead of a traceback minutes in."""
    from kiln.core.errors import first_line
    from kiln.data.user import describe as shapes
    from kiln.data.user import first_batch_samples
    from kiln.train.step import forward

    batches = t.train_batches
    indices = first_batch_samples(batches)
    inputs, targets = next(iter(batches.epoch(0)))
    where = f"the first training batch (samples {indices}...: inputs {shapes(inputs)}, labels {shapes(targets)})"
    was_training = t.model.training
    t.model.eval()
    try:
        with torch.no_grad():
            try:
                outputs = t.task.logits(forward(t.model, inputs))
            except KilnError:
                raise
            except Exception as e:  # noqa: BLE001 — whatever the model raises on these shapes
                raise KilnError(f"the model cannot take {where}: {first_line(e)}. Check the input shape and "
                                "channels the model expects, and the keys of dict inputs") from None
            try:
                t.task.objective(outputs.float(), targets)
            except Exception as e:  # noqa: BLE001
                raise KilnError(f"the loss cannot compare the model's outputs {shapes(outputs)} with the labels of "
                                f"{where}: {first_line(e)}. {t.task.check_message()}") from None
    finally:
        t.model.train(was_training)


def _finish(run: RunDir, cfg: Config, proc: dist.ProcessInfo, state: Checkpoint) -> RunResult:
    """Resume of a run whose epochs are all done: finish what is left (the test and the status), or say that
    nothing is."""
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
    return RunResult(run.path, rows[-1] if rows else {}, test_metrics, config=cfg)


def _train_in(run: RunDir, plan: RunPlan, data: Data, start: Start, quiet: bool,
              extra_callbacks: list[Callback]) -> RunResult:
    """Train in the run folder this process holds (rank 0) or shares."""
    cfg, proc, device, checkpoint_state = plan.config, plan.proc, plan.device, start.state
    if profile_summary(cfg):
        log.info("on this machine: %s", profile_summary(cfg))
    trackers, file_log = _trackers(cfg, run, start.epoch) if proc.is_main else (Trackers([]), None)
    progress = proc.is_main and EpochProgress.wanted(cfg.log.progress, quiet)
    trainer = build_trainer(plan, data, pretrained=checkpoint_state is None,
                            outputs=Outputs(run, trackers, extra_callbacks, progress))
    model, global_batch = trainer.model, trainer.global_batch_size
    log.info("run folder: %s", run)
    log.info("data: %s — %s | %s loader | device %s, precision %s%s", data.info.name,
             ", ".join(f"{k} {v:,}" for k, v in data.sizes.items()), data.loader, device, trainer.precision,
             f" | {proc.world_size} processes, global batch {global_batch}" if proc.distributed else "")
    log.info("model: %s", describe(model))
    if data.info.inputs.own_code:  # inputs the user's code made: their shapes are checked against the model first
        check_first_batch(trainer)
    if checkpoint_state is not None:
        _warn_changed(checkpoint_state, cfg, proc.world_size)
        trainer.load_checkpoint(checkpoint_state)
        trainer.state.finished = False
        log.info("resumed from %s at epoch %d, batch %d (step %d)", run.last,
                 trainer.state.epoch + 1, trainer.state.batch, trainer.state.step)
    trainer.model = plan.strategy.wrap(model, device, frozen=cfg.model.freeze != "none")
    trackers.log_config(cfg.model_dump(mode="json"))

    status = {"world_size": proc.world_size, "global_batch_size": global_batch,
              "parameters": sum(p.numel() for p in model.parameters())}
    if proc.is_main:
        run.write_status(RunStatus.RUNNING, epoch=trainer.state.epoch, epochs=trainer.epochs, **status)
    try:
        metrics = fit(trainer)
        dist.barrier()  # rank 0 has written best.pt before anyone reads it
        result = RunResult(run.path, metrics, config=cfg)
        if trainer.task.wants_validation_predictions():
            plan = _after_fit(plan, run, trainer)
            cfg = result.config = plan.config
        if cfg.trainer.test_after_fit:  # every rank evaluates its shard of the test split
            result.test_metrics = _test_best(plan, run, model, trackers)
        if proc.is_main:
            run.write_status(RunStatus.FINISHED, epoch=trainer.state.epoch, **status)
        return result
    except TrainingInterrupted as e:
        if proc.is_main:
            run.write_status(RunStatus.INTERRUPTED, epoch=trainer.state.epoch, batch=trainer.state.batch, **status)
        done = trainer.state.epoch  # full epochs, as status.json's epoch counts them
        where = f"after epoch {done}" if not trainer.state.batch else \
            f"after {done} full epoch(s) and {trainer.state.batch} batch(es) of epoch {done + 1}"
        what = "preempted (SIGUSR1)" if e.preempted else "interrupted"
        raise TrainingInterrupted(f"training {what}; last.pt saved {where}. Resume with: kiln train --resume {run} "
                                  "(or --resume auto)", preempted=e.preempted) from None
    except TrainingStopped:
        if proc.is_main:
            run.write_status(RunStatus.STOPPED, epoch=trainer.state.epoch, **status)
        raise
    except BaseException:
        if proc.is_main:
            run.write_status(RunStatus.FAILED, epoch=trainer.state.epoch, **status)
        raise
    finally:
        trackers.close()
        if file_log is not None:
            log.removeHandler(file_log)
            file_log.close()


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


def _warn_changed(checkpoint: Checkpoint, cfg: Config, world_size: int) -> None:
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


def _trackers(cfg: Config, run: RunDir, resume_epoch: int | None) -> tuple[Trackers, logging.Handler]:
    file_log = add_log_file(run.log_file)
    trackers: list[Any] = [MetricsFiles(run, resume_epoch)]
    if cfg.log.tensorboard:
        from kiln.track.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(run.tensorboard, resume_epoch))
    trackers += _external_trackers(cfg, run.path, resume_epoch is not None)
    return Trackers(trackers), file_log


def _external_trackers(cfg: Config, run_dir: Path, resuming: bool) -> list[Any]:
    """W&B and MLflow, when configured; one that cannot start is a warning, and training goes on."""
    from kiln.track.external import MlflowTracker, WandbTracker

    makers: list[tuple[str, Callable[[], Any]]] = []
    if cfg.log.wandb is not None:
        makers.append(("Weights & Biases", lambda: WandbTracker(cfg.log.wandb, run_dir, resuming)))
    if cfg.log.mlflow is not None:
        Path(cfg.log.dir).mkdir(parents=True, exist_ok=True)
        default_uri = f"sqlite:///{(Path(cfg.log.dir) / 'mlflow.db').resolve()}"
        makers.append(("MLflow", lambda: MlflowTracker(cfg.log.mlflow, run_dir, default_uri, cfg.name)))
    started = []
    for name, make in makers:
        try:
            started.append(make())
        except KilnError:
            raise  # not installed: a config the user must fix
        except Exception as e:  # noqa: BLE001 — an unreachable server must not stop training
            log.warning("%s tracker could not start (%s); training goes on without it", name, e)
    return started


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
