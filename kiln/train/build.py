"""`build_trainer`: a `Trainer` from a run plan and its loaded data, built the same way for every caller — `kiln
train` and tune trials, lr-find, --find-batch-size, the benchmarks and the tests. Running it is `fit`'s job."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from kiln.config import Config, watched
from kiln.core.checkpoint import RunMeta
from kiln.core.user_code import names_code
from kiln.data import Data
from kiln.data.loaders import split_targets
from kiln.data.mixing import BatchMix
from kiln.models import prepare_model
from kiln.models.freeze import head_prefix
from kiln.runs import RunDir
from kiln.tasks import task_for_training
from kiln.track import Trackers
from kiln.track.console import EpochProgress
from kiln.train.callbacks import Callback, EarlyStopping, EpochSummary, LogMetrics, ModelCheckpoint
from kiln.train.callbacks.collapse import CollapseWatch
from kiln.train.callbacks.data_wait import DataWaitWatch
from kiln.train.callbacks.freeze import FreezeSchedule
from kiln.train.callbacks.memory_watch import GrowthWatch
from kiln.train.callbacks.profile import StepProfile
from kiln.train.callbacks.remote import RemoteMirror
from kiln.train.callbacks.status import StatusUpdate
from kiln.train.distill import Distiller
from kiln.train.ema import weight_ema
from kiln.train.loop import Trainer, batches_per_epoch
from kiln.train.optim import Schedule, build_optimizer
from kiln.train.plan import RunPlan

log = logging.getLogger("kiln")


@dataclass(frozen=True)
class Outputs:
    """What a trainer reports to: checkpoints into `run` (every rank of the run), metrics to `trackers` (the main
    process), the progress bar, and the caller's own `callbacks`, which run after kiln's. The default: nothing
    written, nothing shown (lr-find, the batch-size probe, benchmarks)."""

    run: RunDir | None = None
    trackers: Trackers | None = None
    callbacks: Sequence[Callback] = ()
    progress: bool = False


def build_trainer(plan: RunPlan, data: Data, *, model: torch.nn.Module | None = None, pretrained: bool = False,
                  outputs: Outputs = Outputs()) -> Trainer:
    """The model (built here unless given; with `cfg.model.pretrained` weights if `pretrained`) prepared by the
    plan's strategy, its optimizer at the plan's learning rate and its schedule, the task, and the callbacks:
    kiln's own, in order, then the `outputs`' (see Outputs). Device, precision and the global batch are the
    plan's."""
    cfg, device, precision, run, trackers = plan.config, plan.device, plan.precision, outputs.run, outputs.trackers
    if model is None:
        model = prepare_model(cfg.model, data.info, device, plan.channels_last, pretrained)
    strategy = plan.strategy
    model = strategy.prepare(model, precision, device)  # before the optimizer
    fine_tuning = cfg.model.freeze != "none" or cfg.optim.backbone_lr_mult != 1.0
    head = head_prefix(model, cfg.model.head) if fine_tuning else None
    if cfg.optim.lr_base is not None:
        log.info("optim.lr_base=%g per %d samples, %s-scaled to the global batch %d: lr %.4g", cfg.optim.lr_base,
                 cfg.optim.lr_base_size, cfg.optim.scaling(), plan.global_batch, plan.lr)
    optimizer = build_optimizer(cfg.optim, model, device, head, lr=plan.lr)
    epochs = 1 if cfg.trainer.fast_dev_run else cfg.trainer.epochs
    steps_per_epoch = -(-batches_per_epoch(cfg.trainer, len(data.require("train"))) // cfg.trainer.accumulate)
    monitor, mode = watched(cfg.trainer.checkpoint)
    schedule = Schedule(cfg.schedule, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, monitor=monitor,
                        monitor_mode=mode)
    ema = weight_ema(model, cfg.trainer.ema.decay, cfg.trainer.ema.every, sharded=strategy.shards) \
        if cfg.trainer.ema else None
    task = task_for_training(cfg.task, lambda: split_targets(data.require("train")), data.info.num_classes)
    mix = BatchMix(cfg.data.augment, cfg.seed, task.soft_targets) if cfg.data.augment.mixes else None
    teacher = getattr(cfg.task, "distill", None)  # only the tasks that can learn from a teacher have the setting
    distill = Distiller.load(teacher, task, data.info, device) if teacher is not None else None
    return Trainer(
        cfg=cfg.trainer, model=model, optimizer=optimizer, task=task, mix=mix, distill=distill,
        memory_snapshot=run.path / "memory_snapshot.pickle" if run is not None and cfg.trainer.memory_snapshot and
        device.type == "cuda" else None,
        schedule=schedule, data=data, device=device, precision=precision, epochs=epochs,
        progress=EpochProgress(outputs.progress),
        callbacks=default_callbacks(cfg, model, head, run, trackers) + list(outputs.callbacks),
        meta=RunMeta(cfg.model_dump(mode="json"), asdict(data.info), plan.proc.world_size, plan.global_batch),
        ema=ema, strategy=strategy)


def default_callbacks(cfg: Config, model: torch.nn.Module, head: str | None, run: RunDir | None,
                      trackers: Trackers | None) -> list[Callback]:
    """kiln's own callbacks, in the order they run: the freeze schedule, the memory and collapse watches, early stopping
    (before the checkpoint, which saves its state), metric logging, checkpoints (with `run`: on every rank of a
    multi-process run, which all take part in each checkpoint) and status.json, the summary line."""
    callbacks: list[Callback] = []
    if cfg.model.freeze != "none":
        assert head is not None
        callbacks.append(FreezeSchedule(model, cfg.model.freeze, cfg.model.unfreeze_at_epoch, head))
    own_code = names_code(cfg.model.name) or names_code(cfg.data.name) or cfg.data.collate is not None
    callbacks += [GrowthWatch(own_code=own_code), CollapseWatch(), DataWaitWatch(cfg.data.num_workers),
                  EarlyStopping(cfg.trainer.early_stopping)]
    if trackers is not None:
        callbacks.append(LogMetrics(trackers))
    if run is None:
        return [*callbacks, EpochSummary(None)]
    checkpoint = ModelCheckpoint(cfg.trainer.checkpoint, run)
    profile = [StepProfile(cfg.trainer.profile, run.path, cfg.data.num_workers)] if cfg.trainer.profile else []
    mirror = [RemoteMirror(cfg.log.remote, run)] if cfg.log.remote else []
    return [*profile, *callbacks, checkpoint, StatusUpdate(run), *mirror, EpochSummary(checkpoint)]
