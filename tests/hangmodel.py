"""A model whose rank-1 process stops responding in its forward after some training steps (a hang, not a crash):
the other rank waits for its gradients."""

import os
import time

import torch
from torch import nn


class HangOnRank1(nn.Module):
    def __init__(self, num_classes: int, after: int = 8):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if os.environ.get("RANK") == "1" and self.calls > self.after:
                time.sleep(3600)  # stuck: a dead file system, a deadlock in user code
        return self.fc(x.flatten(1))
