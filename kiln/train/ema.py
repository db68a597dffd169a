"""An exponential moving average of the weights (`trainer.ema`): what is validated, what `best.pt` holds as its
model, and so what `kiln test`, `predict`, `export` and fine-tuning use. `last.pt` also keeps the raw weights
(`raw_model`), so a resume continues both exactly. Buffers (BatchNorm statistics) are copied, not averaged."""

from __future__ import annotations

import copy

import torch
from torch import nn

from kiln.core.state import unwrap


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        self.decay, self.every = decay, every
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0  # optimizer steps seen; the average moves every `every` of them

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        if self.updates % self.every:
            return
        live = unwrap(model)
        averaged: list[torch.Tensor] = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        current: list[torch.Tensor] = [p.detach() for p in live.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay)  # avg += (1 - decay) * (p - avg)
        for mine, theirs in zip(self.module.buffers(), live.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
