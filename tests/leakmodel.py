"""A model with the classic leak: it keeps a tensor from every training step (about 2 MiB each)."""

import torch
from torch import nn


class Leaky(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)
        self.kept = []

    def forward(self, x):
        if self.training:
            self.kept.append(torch.ones(512 * 1024))  # 2 MiB that is never released
        return self.fc(x.flatten(1))
