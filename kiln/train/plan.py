"""The run plan: the config as the user gave it (validated, frozen) and the config the run trains with, which is
the same plus every value kiln derived for this run — the weights' preprocessing, image size, channels, classes and
normalisation from the data, epochs from steps, the regression targets' scaling, a threshold tuned after training.
Each step makes a new config; nothing writes into one. The run's config.yaml records the trained-with config and
lists, separately, which values kiln derived and from what, so test, predict, export, cv and resume read them back
instead of deriving them again."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from kiln.config import DERIVED, Config, flatten
from kiln.core import dist
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
    def of(cls, cfg: Config, device: torch.device, proc: dist.ProcessInfo) -> RunPlan:
        return cls(cfg, cfg, device, proc)

    @property
    def strategy(self) -> Strategy:
        """How the model is spread over this run's processes (trainer.strategy, resolved for the world size)."""
        return Strategy.of(self.config.trainer, self.proc.world_size)

    @property
    def channels_last(self) -> bool:
        return use_channels_last(self.config.trainer.channels_last, self.device, self.config.model.name)

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
        out = {}
        if trainer.device == "auto":
            out["trainer.device"] = f"{device} on this machine"
        if trainer.precision == "auto":
            out["trainer.precision"] = f"{resolve_precision('auto', device)} on {device.type}"
        if world > 1 or trainer.strategy != "auto":
            out["trainer.strategy"] = f"{self.strategy.name} over {world} process{'es' if world > 1 else ''}"
        return out

    def comments(self) -> dict[str, str]:
        """config.yaml's comments from the plan: what was resolved for this machine, and what was derived."""
        return {**self.resolved(), **self.derived()}
