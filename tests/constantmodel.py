"""A model that ignores its input: its outputs are the bias alone, so it predicts one class for every sample while
its training loss falls (to the entropy of the class frequencies) — a collapsed model."""

from torch import nn


class Constant(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1) * 0)
