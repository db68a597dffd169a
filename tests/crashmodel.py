"""A model whose rank-1 process crashes after some training steps, once (not after a torchrun restart)."""

import os

import torch
from torch import nn


class CrashOnRank1(nn.Module):
    def __init__(self, num_classes: int, after: int = 15):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            if os.environ.get("RANK") == "1" and first_attempt and self.calls > self.after:
                raise RuntimeError("worker crashed on purpose")
        return self.fc(x.flatten(1))
