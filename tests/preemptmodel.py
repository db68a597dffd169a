"""A model that sends its own process SLURM's preemption warning (SIGUSR1) on its Nth training forward."""

import os
import signal

import torch
from torch import nn


class WarnedAt(nn.Module):
    """`sig`: the signal sent (SIGUSR1: SLURM's warning; SIGINT: Ctrl-C, a notebook's interrupt)."""

    def __init__(self, num_classes: int, at: int = 5, sig: str = "SIGUSR1"):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)
        self.at, self.calls, self.sig = at, 0, sig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.at and os.environ.get("KILN_TEST_PREEMPT") == "1":
                os.kill(os.getpid(), getattr(signal, self.sig))
        return self.fc(x.flatten(1))


class TextWarnedAt(nn.Module):
    """kiln's text transformer (two encoder layers: blocks FSDP shards), with WarnedAt's signal."""

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int = 0, at: int = 5, **args):
        super().__init__()
        from kiln.models.text import transformer

        self.net = transformer(vocab_size, num_classes, pad_id, **args)
        self.at, self.calls = at, 0

    def forward(self, batch) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.at and os.environ.get("KILN_TEST_PREEMPT") == "1":
                os.kill(os.getpid(), signal.SIGUSR1)
        return self.net(batch)
