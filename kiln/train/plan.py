"""The run plan: the config as the user gave it (validated, frozen) and the config the run trains with, which is
the same plus every value kiln derived for this run — the default monitors, the weights' preprocessing, image
size, channels, classes and normalisation from the data, epochs from steps, the regression targets' scaling, a
threshold tuned after training. Each step makes a new config; nothing writes into one. The run's config.yaml
records the trained-with config and lists, separately, which values kiln derived and from what, so test, predict,
export, cv and resume read them back instead of deriving them again.

What depends on the machine and the process group rather than on the data — the device, precision, strategy,
global batch and the learning rate scaled to it — the plan resolves as properties, recomputed wherever the run is
tested or resumed, and config.yaml shows them as comments. Every command reads its data through `RunPlan.data`.

Every entry point starts from `RunPlan.of` (the device, the monitors, the weights' preprocessing); training goes on
with `trained_on(data)` (what the data decides, checked before the run folder exists)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from kiln.config import DERIVED, Config, flatten, resolved_values, with_default_monitors
from kiln.core import dist
from kiln.core.errors import KilnError
from kiln.data import Data, DataRequest, build_data
from kiln.data.loaders import split_targets
from kiln.models.preprocessing import with_weights_preprocessing
from kiln.tasks import build_task, resolve_task_settings, task_class
from kiln.train.device import resolve_device, resolve_precision, use_channels_last
from kiln.train.strategy import Strategy

log = logging.getLogger("kiln")


@dataclass(frozen=True)
class RunPlan:
    given: Config  # what the user wrote (and the device profile applied), validated
    config: Config  # what the run trains with: `given` and the values derived for this run
    device: torch.device  # this process's device
    proc: dist.ProcessInfo  # this process's rank and the world size
    how: dict[str, str] = field(default_factory=dict)  # dotted key -> where kiln took its value from

    @classmethod
    def of(cls, cfg: Config, device: torch.device | str | None = None, proc: dist.ProcessInfo | None = None) -> RunPlan:
        """The plan of `cfg` for `proc` (default: this process) on `device` (default: trainer.device resolved for
        the process), its default monitors and the pretrained weights' preprocessing resolved."""
        proc = proc or dist.current()
        if device is None:
            device = resolve_device(cfg.trainer.device, proc.local_rank, proc.local_world_size, cfg.trainer.backend)
        plan = cls(cfg, cfg, torch.device(device), proc)
        plan = plan.then(with_default_monitors(cfg, task_class(cfg.task.name).better), "the task and the monitored metric")
        # image size, crop and normalisation the pretrained weights expect: for training and for what measures it
        # (lr-find, the batch-size probe); a trained run's config.yaml already holds them, so nothing changes there
        return plan.then(with_weights_preprocessing(plan.config), "the pretrained weights' preprocessing")

    @property
    def precision(self) -> str:
        """trainer.precision resolved for this device: 32, 16 or bf16."""
        return resolve_precision(self.config.trainer.precision, self.device)

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over every process: batch size x processes x accumulation."""
        cfg = self.config
        return cfg.data.batch_size * self.proc.world_size * cfg.trainer.accumulate

    @property
    def lr(self) -> float:
        """The peak learning rate: optim.lr, or optim.lr_base scaled to the global batch."""
        return self.config.optim.resolved_lr(self.global_batch)

    @property
    def strategy(self) -> Strategy:
        """How the model is spread over this run's processes (trainer.strategy, resolved for the world size)."""
        return Strategy.of(self.config.trainer, self.proc.world_size)

    @property
    def channels_last(self) -> bool:
        return use_channels_last(self.config.trainer.channels_last, self.device, self.config.model.name)

    def data(self, splits: tuple[str, ...] = ("train", "val", "test"), vocab: Any = None) -> Data:
        """The plan's data: `splits` batched for this device and this process's shard (the training split at
        trainer.overfit_batches), split by the run's seed, text encoded with `vocab` (a run's saved vocabulary or
        tokenizer, or a fresh one to build from the training split)."""
        cfg, proc = self.config, self.proc
        return build_data(cfg.data, DataRequest(
            task=cfg.task.name, seed=cfg.seed, device=self.device, splits=splits, channels_last=self.channels_last,
            overfit_batches=cfg.trainer.overfit_batches if "train" in splits else 0, rank=proc.rank,
            world_size=proc.world_size, vocab=vocab))

    def trained_on(self, data: Data, *, resuming: bool = False) -> RunPlan:
        """The plan with what the training data decides — the data.* values the source derived, epochs from steps
        (not when resuming: a resumed run's config.yaml holds them), the task's settings from the training targets
        — after checking that the data can train this config (the monitored metrics exist, the targets are
        learnable)."""
        plan = self.then(self.config.with_values({f"data.{k}": v for k, v in data.derived.items()}), "the training data")
        task = resolve_task_settings(plan.config.task, lambda: split_targets(data.require("train")), data.info)
        plan = plan.then(plan.config.with_values({"task": task}), "the training split's targets")
        check_monitors(plan.config, data.info.num_classes)
        check_targets(plan.config, data)
        if not resuming:
            plan = plan.then(epochs_from_steps(plan.config, len(data.require("train"))), "the training steps")
        return plan

    def then(self, config: Config, how: str) -> RunPlan:
        """The plan continued with `config`: this plan's config with values derived from `how` (the values that
        differ are recorded as derived)."""
        if config is self.config:
            return self
        before, after = flatten(self.config.model_dump(mode="json")), flatten(config.model_dump(mode="json"))
        changed = {key: how for key, value in after.items() if before.get(key) != value}
        return replace(self, config=config, how={**self.how, **changed})

    def derived(self) -> dict[str, str]:
        """For config.yaml's comments: each derived key -> `derived from ...`."""
        return {key: DERIVED + how for key, how in self.how.items()}

    def resolved(self) -> dict[str, str]:
        """For config.yaml's comments too: what this machine and process group make of the settings left to kiln.
        Not values of the config (the same run tested or resumed elsewhere resolves them again), so they are
        written anew with every config.yaml."""
        trainer, device, world = self.config.trainer, self.device, self.proc.world_size
        out = resolved_values(self.config, world)
        if trainer.device == "auto":
            out["trainer.device"] = f"{device} on this machine"
        if trainer.precision == "auto":
            out["trainer.precision"] = f"{self.precision} on {device.type}"
        if world > 1 or trainer.strategy != "auto":
            out["trainer.strategy"] = f"{self.strategy.name} over {world} process{'es' if world > 1 else ''}"
        return out

    def comments(self) -> dict[str, str]:
        """config.yaml's comments from the plan: what was resolved for this machine, and what was derived."""
        return {**self.resolved(), **self.derived()}


def check_monitors(cfg: Config, num_classes: int | None) -> None:
    """Reject, before training, a monitored metric that this run will never produce (`num_classes` None: not known
    before the data is read; then only what is known is checked, and trained_on checks again)."""
    has_val = cfg.data.val_split != 0 or cfg.trainer.overfit_batches > 0
    available = build_task(cfg.task, num_classes).metric_names(has_val)
    if available is None:  # not known before the data is read (text_csv); checked again after loading
        return
    monitored = {"trainer.checkpoint.monitor": cfg.trainer.checkpoint.monitor or cfg.task.default_monitor}
    if cfg.trainer.early_stopping.enabled:
        monitored["trainer.early_stopping.monitor"] = cfg.trainer.early_stopping.monitor
    for key, metric in monitored.items():
        if metric not in available:
            why = " (there is no validation split: data.val_split=0)" if metric.startswith("val/") and not has_val else ""
            raise KilnError(f"{key}={metric!r} is a metric this run will never produce{why}; "
                            f"available: {', '.join(available)}")


def check_before_data(cfg: Config) -> None:
    """What can be checked of the monitors before the data is read: with the classes the config or the registry
    knows."""
    from kiln.data.registry import known_num_classes

    check_monitors(with_default_monitors(cfg),
                   len(cfg.data.classes) if cfg.data.classes else known_num_classes(cfg.data.name))
    check_mixing(cfg)
    if (teacher := getattr(cfg.task, "distill", None)) is not None:  # only tasks that can learn from one have it
        check_teacher(teacher.teacher)


def check_teacher(teacher: str) -> None:
    """task.distill.teacher names a trained run (checked before the data is read)."""
    from kiln.runs import RunDir

    if not RunDir(teacher).is_run:
        raise KilnError(f"task.distill.teacher={teacher} is not a kiln run folder (one with a config.yaml and "
                        "checkpoints/): give the run folder of the trained teacher")


def check_mixing(cfg: Config) -> None:
    """MixUp/CutMix blend two samples' targets: only for a task whose targets can be blended."""
    if cfg.data.augment.mixes and not task_class(cfg.task.name).mixes:
        raise KilnError(f"data.augment.mixup/cutmix blend two samples' targets, which has no meaning for "
                        f"task.name={cfg.task.name}; they are for multiclass and multilabel (a task of your own "
                        "mixes when it sets `mixes = True` and implements soft_targets). Unset them")


def check_targets(cfg: Config, data: Data) -> None:
    """Reject, before the run folder exists, data the task cannot learn from (one class, one label)."""
    from kiln.data.loaders import split_labels

    where = f"data.name={cfg.data.name}" + (f" (data.root={cfg.data.root})" if cfg.data.root else "")
    train = split_labels(data.train) if data.train is not None else None
    build_task(cfg.task, data.info.num_classes).check_targets(data.info.class_names, train, where)


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
