"""A model that starts producing NaN logits after a number of training forward passes (for NaN-policy tests)."""

import torch
from torch import nn


class NanAfter(nn.Module):
    def __init__(self, num_classes: int, after: int = 15):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out
