"""An exponential moving average of the weights (`trainer.ema`): what is validated, what `best.pt` holds as its
model, and so what `kiln test`, `predict`, `export` and fine-tuning use. `last.pt` also keeps the raw weights
(`raw_model`), so a resume continues both exactly. Buffers (BatchNorm statistics) are the live model's.

One process or DDP: the average is a copy of the model. FSDP (a sharded module cannot be copied): each rank keeps
the average of its own shards of the parameters, and the average is swapped into the model's shards while it is
validated or saved."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from kiln.core.state import load_weights, unwrap


def weight_ema(model: nn.Module, decay: float, every: int = 1, sharded: bool = False) -> WeightEMA | ShardedEMA:
    """The average of `model`'s weights; `sharded`: the model is sharded (FSDP), each rank averages its shards."""
    return (ShardedEMA if sharded else WeightEMA)(model, decay, every)


class _Schedule:
    """When the average moves: every `every` optimizer steps, counted across a resume."""

    def __init__(self, decay: float, every: int):
        self.decay, self.every = decay, every
        self.updates = 0

    def due(self) -> bool:
        self.updates += 1
        return self.updates % self.every == 0

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])


class WeightEMA(_Schedule):
    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        super().__init__(decay, every)
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if not self.due():
            return
        live = unwrap(model)
        averaged: list[torch.Tensor] = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        current: list[torch.Tensor] = [p.detach() for p in live.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay)  # avg += (1 - decay) * (p - avg)
        for mine, theirs in zip(self.module.buffers(), live.buffers()):
            mine.copy_(theirs)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The module holding the average (validated, saved)."""
        yield self.module

    def load_average(self, model: nn.Module, weights: dict[str, Any]) -> None:
        self.module.load_state_dict(weights)


class ShardedEMA(_Schedule):
    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        super().__init__(decay, every)
        self.shadow = {name: _local(p).detach().clone() for name, p in _floating(model)}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if not self.due():
            return
        names = list(self.shadow)
        live = dict(_floating(model))
        torch._foreach_lerp_([self.shadow[n] for n in names], [_local(live[n]).detach() for n in names],
                             1.0 - self.decay)

    @contextmanager
    @torch.no_grad()
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the average in its shards (its own weights are put back afterwards)."""
        live = dict(_floating(model))
        kept = {n: _local(live[n]).clone() for n in self.shadow}
        for n, average in self.shadow.items():
            _local(live[n]).copy_(average)
        try:
            yield model
        finally:
            for n, own in kept.items():
                _local(live[n]).copy_(own)

    @torch.no_grad()
    def load_average(self, model: nn.Module, weights: dict[str, Any]) -> None:
        """The average from this rank's sharded state dict (a sharded checkpoint's), or from a full one (loaded
        into the model's shards while the average is swapped in: the model's own weights are kept)."""
        if _is_sharded_state(weights):
            for n, average in self.shadow.items():
                average.copy_(_local(weights[n]))
            return
        with self.applied(model):
            load_weights(unwrap(model), weights, "the checkpoint")  # each rank keeps its shard
            for n, p in _floating(model):
                self.shadow[n].copy_(_local(p))


def _floating(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in unwrap(model).named_parameters() if p.dtype.is_floating_point]


def _local(p: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded (DTensor) parameter, in place."""
    return p.to_local() if hasattr(p, "to_local") else p


def _is_sharded_state(weights: dict[str, Any]) -> bool:
    return any(hasattr(v, "to_local") for v in weights.values())


# The weight average a trainer keeps with trainer.ema: over whole parameters, or over this rank's shards (FSDP).
WeightAverage = WeightEMA | ShardedEMA
