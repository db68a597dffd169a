"""Training metrics accumulated on the device and read once per epoch (no per-batch host syncs)."""

from __future__ import annotations

from typing import Any

import torch

from kiln.core import dist
from kiln.data.loaders import batch_len


class RunningMean:
    """Sums of the reported loss, the task's training metric (correct predictions, absolute errors, ...) and the
    training objective over an epoch, kept as
    device tensors; the sample count is kept on the host. Creating a device tensor from a Python number (the
    count) would be a blocking host-to-device copy on every step."""

    def __init__(self, device: torch.device, task: Any):
        self.device, self.task = device, task
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, training metric, objective (sums)
        self.count = 0  # samples: a host int

    @torch.no_grad()
    def update(self, objective: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """objective: the batch's mean training loss; outputs: the model's outputs for the batch."""
        n = batch_len(targets)
        objective_sum = objective.detach().double() * n
        loss_sum = self.task.loss_sum(outputs, targets).double() if self.task.smoothed else objective_sum
        score = self.task.train_score_sum(outputs, targets).double() if self.task.train_metric else objective_sum * 0
        self.sums += torch.stack([loss_sum, score, objective_sum])
        self.count += n

    def compute(self, sync: bool = False) -> dict[str, float]:
        """Means over this rank's batches, or over every rank's with sync=True (all ranks must call it)."""
        if sync and dist.current().distributed:
            totals = dist.all_reduce(torch.cat([self.sums, self.sums.new_tensor([self.count])])).tolist()
            (loss_sum, score, objective_sum), n = totals[:3], totals[3]
        else:
            (loss_sum, score, objective_sum), n = self.sums.tolist(), self.count  # the one host sync
        means = {"loss": loss_sum / max(n, 1)}
        if self.task.train_metric:  # a task may have no running training metric
            means[self.task.train_metric] = score / max(n, 1)
        if self.task.smoothed:
            means["objective"] = objective_sum / max(n, 1)
        return means

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sums over every rank (all ranks call it together): a resume on any number of processes goes on
        from the same epoch means."""
        loss, score, objective, count = dist.all_reduce(torch.cat([self.sums, self.sums.new_tensor([self.count])])).cpu()
        return {"sums": torch.stack([loss, score, count, objective])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Rank 0 takes the saved totals, the other ranks start from zero: their sum is the totals."""
        sums = state["sums"].double()  # (loss, score, n[, objective]): format 1 had no objective (= the loss)
        objective = sums[3] if len(sums) > 3 else sums[0]
        if dist.current().rank != 0:
            sums, objective = torch.zeros_like(sums), torch.zeros((), dtype=torch.float64)
        self.sums = torch.stack([sums[0], sums[1], objective]).to(self.device)
        self.count = int(sums[2].item())
