"""The run plan: the config as the user gave it (validated, frozen) and the config the run trains with, which is
the same plus every value kiln derived for this run — the default monitors, the weights' preprocessing, image
size, channels, classes and normalisation from the data, epochs from steps, the regression targets' scaling, a
threshold tuned after training. Each step makes a new config; nothing writes into one. The run's config.yaml
records the trained-with config and lists, separately, which values kiln derived and from what, so test, predict,
export, cv and resume read them back instead of deriving them again.

What depends on the machine and the process group rather than on the data — the device, precision, strategy,
global batch and the learning rate scaled to it — the plan resolves as properties, recomputed wherever the run is
tested or resumed, and config.yaml shows them as comments. Every command reads its data through `RunPlan.data`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from kiln.config import DERIVED, Config, flatten, resolved_values, with_default_monitors
from kiln.core import dist
from kiln.data import Data, DataRequest, build_data
from kiln.models.preprocessing import with_weights_preprocessing
from kiln.train.device import resolve_precision, use_channels_last
from kiln.train.strategy import Strategy


@dataclass(frozen=True)
class RunPlan:
    given: Config  # what the user wrote (and the device profile applied), validated
    config: Config  # what the run trains with: `given` and the values derived for this run
    device: torch.device  # this process's device
    proc: dist.ProcessInfo  # this process's rank and the world size
    how: dict[str, str] = field(default_factory=dict)  # dotted key -> where kiln took its value from

    @classmethod
    def of(cls, cfg: Config, device: torch.device, proc: dist.ProcessInfo | None = None) -> RunPlan:
        """The plan of `cfg` on `device` for `proc` (default: this process), its default monitors and the pretrained
        weights' preprocessing resolved."""
        plan = cls(cfg, cfg, device, proc or dist.current())
        plan = plan.then(with_default_monitors(cfg), "the task and the monitored metric")
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
