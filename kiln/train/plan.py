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
from kiln.train.device import use_channels_last
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
