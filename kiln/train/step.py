"""The training step: one for every caller. `fit`, `kiln lr-find` and `--find-batch-size` all run it, so label
smoothing, the gradient scaler, clipping and accumulation behave the same everywhere.

The step makes no host syncs (no `.item()`, no tensor made from a Python number) unless the config asks for
one by design: `nan_policy: skip_batch` reads every loss, and fp16's scaler step reads its inf check.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.profiler import record_function

from kiln.config import TrainerConfig
from kiln.core import dist, hang
from kiln.tasks.base import call_model
from kiln.train.device import autocast
from kiln.train.ema import WeightAverage
from kiln.train.metrics import RunningMean
from kiln.train.strategy import Strategy

if TYPE_CHECKING:  # only its type: distill loads a trained teacher, which imports the loop
    from kiln.train.distill import Distiller


def forward(model: nn.Module, inputs: Any) -> Any:
    """The model on a batch's inputs (kiln.tasks.base.call_model: a tuple as positional arguments, a dict as
    keywords); what the loss takes of it is the task's (Task.outputs)."""
    return call_model(model, inputs)


class TrainStep:
    """Forward, loss, backward and (every `accumulate` batches) an optimizer and schedule step."""

    def __init__(self, cfg: TrainerConfig, task: Any, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str, schedule: Any = None, strategy: Strategy | None = None):
        self.cfg, self.task, self.optimizer, self.schedule = cfg, task, optimizer, schedule
        self.strategy = strategy or Strategy(cfg)
        self.device, self.precision = device, precision
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
        self.running = RunningMean(device, task)
        self.nonfinite = NonFiniteCount(device)
        self.ema: WeightAverage | None = None  # moved after every optimizer step (trainer.ema)
        self.distill: Distiller | None = None  # a teacher's share of the loss (task.distill)

    def __call__(self, model: nn.Module, inputs: Any, targets: torch.Tensor, optimizer_step: bool = True) -> torch.Tensor | None:
        """The detached loss, or None when a non-finite loss was skipped (nan_policy=skip_batch).
        Under DDP and FSDP the gradients are synchronised only on the micro-step that steps the optimizer."""
        with self.strategy.gradient_sync(model, optimizer_step):
            # the phases are profiler ranges: kiln train --profile measures them (kiln.train.callbacks.profile)
            with record_function("kiln.forward"), autocast(self.device, self.precision):
                outputs = self.task.outputs(model, inputs, targets)
                loss = self.task.objective(outputs, targets)
                if self.distill is not None:  # the teacher answers the same batch, under the same autocast
                    loss = self.distill.blended(loss, outputs, inputs)
            if self.cfg.nan_policy == "skip_batch" and dist.any_rank(not torch.isfinite(loss).item(), self.device):
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self.nonfinite.add(loss)
            with record_function("kiln.backward"), self._syncing(optimizer_step):
                self.scaler.scale(loss / self.cfg.accumulate).backward()
        self.running.update(loss.detach().float(), outputs.detach() if isinstance(outputs, torch.Tensor) else outputs,
                            targets)  # a detector's outputs in training: its losses
        if optimizer_step:
            with record_function("kiln.optimizer"):
                self._optimizer_step(model)
        return loss.detach()

    @staticmethod
    def _syncing(optimizer_step: bool) -> AbstractContextManager[None]:
        """Under several processes the backward of an optimizer step waits for every rank's gradients: the hang
        watch reports a rank stalled there as waiting in that all-reduce."""
        if optimizer_step and dist.current().distributed:
            return hang.waiting("backward (the gradient all-reduce)")
        return nullcontext()

    def _optimizer_step(self, model: nn.Module) -> None:
        """Clip, step (through the gradient scaler), clear the gradients, advance the schedule and the EMA."""
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None:
            self.schedule.after_step()
        if self.ema is not None:
            self.ema.update(model)


class NonFiniteCount:
    """Counts non-finite losses on the device. `seen(wait=False)` answers without stopping the GPU: it reads
    the count copied (asynchronously) at the previous check, so a NaN is noticed one check late; `wait=True`
    (epoch ends, before saving) reads the current count."""

    def __init__(self, device: torch.device):
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.async_copy = device.type == "cuda"
        if self.async_copy:
            self.host = torch.zeros((), dtype=torch.int64, pin_memory=True)
            self.copied = torch.cuda.Event()
            self.pending = False

    def add(self, loss: torch.Tensor) -> None:
        self.count += ~torch.isfinite(loss.detach())

    def seen(self, wait: bool = True) -> bool:
        """Has any loss so far been NaN/Inf (on any rank)? Under DDP the ranks agree, which syncs."""
        if wait or not self.async_copy or dist.current().distributed:
            return dist.any_rank(self.count.item() > 0, self.count.device)
        found = self.pending and self.copied.query() and self.host.item() > 0
        if not self.pending or self.copied.query():
            self.host.copy_(self.count, non_blocking=True)
            self.copied.record()
            self.pending = True
        return found
