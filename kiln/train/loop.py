"""The training loop: `fit` (epochs) -> `train_epoch` (batches) -> `train_step` (one batch), and `evaluate`.

`fit` takes ready-made objects (a `Trainer` bundle), not a config: building them
is the caller's job, so tuning and tests can call it as a plain function.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kiln.config import TrainerConfig
from kiln.core import dist, hang
from kiln.core.checkpoint import Checkpoint, LoopState, RunMeta
from kiln.core.errors import KilnError, TrainingInterrupted, TrainingStopped, first_line
from kiln.core.state import rng_state, set_rng_state, unwrap
from kiln.data import Batches, Data
from kiln.data.loaders import batch_len
from kiln.data.mixing import BatchMix
from kiln.tasks import Task
from kiln.track.console import EpochProgress
from kiln.train.callbacks import Callback
from kiln.train.device import autocast
from kiln.train.ema import WeightAverage
from kiln.train.memory import dump_memory_snapshot, epoch_memory, model_memory, out_of_memory_message
from kiln.train.optim import Schedule
from kiln.train.step import TrainStep
from kiln.train.strategy import Strategy, averaged, whole

if TYPE_CHECKING:  # only its type: distill loads a trained teacher, which imports the loop
    from kiln.train.distill import Distiller

log = logging.getLogger("kiln")


def batches_per_epoch(cfg: TrainerConfig, available: int) -> int:
    """Training batches an epoch runs: all, or trainer.limit_train_batches, or 2 with fast_dev_run."""
    limit = 2 if cfg.fast_dev_run else cfg.limit_train_batches
    return min(available, limit or available)


@dataclass
class Trainer:
    """Everything `fit` works with. Each part is built from its own config section by the caller."""

    cfg: TrainerConfig
    task: Task  # the loss, the metrics and their names
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    data: Data
    device: torch.device
    precision: str
    epochs: int
    progress: EpochProgress
    callbacks: list[Callback] = field(default_factory=list)  # called in this order
    meta: RunMeta | None = None  # the config and data info, saved in every checkpoint
    state: LoopState = field(default_factory=LoopState)
    stop_requested: bool = False  # a signal asked to stop: save and exit
    preempted: bool = False  # that signal was SLURM's preemption warning (SIGUSR1)
    stop_training: bool = False  # a callback (early stopping) ends training after this epoch
    ema: WeightAverage | None = None  # with trainer.ema
    mix: BatchMix | None = None  # MixUp / CutMix of the training batches (data.augment.mixup, cutmix)
    memory_snapshot: Path | None = None  # trainer.memory_snapshot on CUDA: where an out-of-memory dumps the history
    distill: Distiller | None = None  # a teacher's share of the loss (task.distill)
    # how the model is spread over the processes: its gradient sync and checkpoint I/O (default: one process)
    strategy: Strategy = field(default_factory=lambda: Strategy(TrainerConfig()))

    def __post_init__(self) -> None:
        self.step = TrainStep(self.cfg, self.task, self.optimizer, self.device, self.precision, self.schedule,
                              self.strategy)
        self.step.ema, self.step.distill = self.ema, self.distill
        self.skipped = 0
        self.data_wait = 0.0  # the last epoch's share of training time spent waiting for batches
        # The run's first step on a GPU or compiled: compilation / cuDNN autotuning, reported on its own.
        self.first_step_seconds: float | None = None
        self.first_epoch = self.state.epoch

    @property
    def train_batches(self) -> Batches:
        return self.data.require("train")

    @property
    def batches_per_epoch(self) -> int:
        return batches_per_epoch(self.cfg, len(self.train_batches))

    @contextmanager
    def averaged(self) -> Iterator[nn.Module]:
        """What is validated and saved as the model: the weight average with trainer.ema, else the model."""
        with averaged(self.model, self.ema) as average:
            yield average

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step over every process."""
        assert self.meta is not None and self.meta.global_batch_size is not None, "built by build_trainer"
        return self.meta.global_batch_size

    @property
    def val_limit(self) -> int | None:
        return 2 if self.cfg.fast_dev_run else self.cfg.limit_val_batches

    # -- everything that must survive a resume
    def checkpoint(self) -> Checkpoint:
        """Under several processes every rank calls it at the same moment (it gathers what each rank holds). With
        sharded checkpoints the model and optimizer are this rank's shards."""
        shards = self.saves_shards
        weights, raw, ema = self.strategy.training_weights(self.model, self.ema)
        return Checkpoint(
            model=weights, meta=self.meta, raw_model=raw, ema=ema,
            optimizer=self.strategy.optimizer_state(self.model, self.optimizer, shards),
            schedule=self.schedule.state_dict(), scaler=self.step.scaler.state_dict(),
            loop=replace(self.state), running=self.step.running.state_dict(),
            callbacks={cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key},
            rng=rng_state(), rng_ranks=dist.gather(rng_state()) if dist.current().distributed else None)

    @property
    def saves_shards(self) -> bool:
        return self.strategy.saves_shards

    def load_checkpoint(self, state: Checkpoint) -> None:
        """A full checkpoint, or a sharded one's state with the folder of its shards (kiln.train.strategy's
        resume_state)."""
        self.strategy.restore_training_weights(self.model, self.optimizer, self.ema, state)
        assert state.schedule is not None and state.running is not None, "a training checkpoint"
        self.schedule.load_state_dict(state.schedule)
        self._load_scaler(state.scaler or {})
        self.state.load_state_dict(state.loop.state_dict())
        self.step.running.load_state_dict(state.running)
        for cb in self.callbacks:
            if cb.state_key and state.callbacks.get(cb.state_key):
                cb.load_state_dict(state.callbacks[cb.state_key])
        ranks = state.rng_ranks or []  # every rank's own generators (dropout), on the same world size
        own = ranks[dist.current().rank] if len(ranks) == dist.current().world_size else state.rng
        assert own is not None, "a training checkpoint"
        set_rng_state(own)

    def _load_scaler(self, saved: dict[str, Any]) -> None:
        """A checkpoint saved without a scaler (bf16, 32, or 16 that fell back to 32) has nothing to load."""
        scaler = self.step.scaler
        if bool(saved) != scaler.is_enabled():
            log.warning("resuming with another precision (%s; the checkpoint was saved %s a gradient scaler): "
                        "the scaler %s", self.precision, "with" if saved else "without",
                        "starts afresh" if scaler.is_enabled() else "state is dropped")
        if saved and scaler.is_enabled():
            scaler.load_state_dict(saved)


def fit(t: Trainer) -> dict[str, float]:
    """Train from `t.state` to the last epoch (or an early stop); return the last epoch's metrics."""
    metrics: dict[str, float] = {}
    t.first_epoch, t.stop_training = t.state.epoch, False
    if t.memory_snapshot is not None:  # CUDA's allocator records its recent history, dumped on out of memory
        torch.cuda.memory._record_memory_history(max_entries=100_000)
    _call(t, "on_fit_start", t)
    with _stop_on_signals(t):
        while t.state.epoch < t.epochs:
            epoch = t.state.epoch
            train_seconds, num_samples = train_epoch(t, epoch)
            metrics = _epoch_metrics(t, epoch, train_seconds, num_samples)
            t.schedule.after_epoch(metrics)
            t.state.epoch, t.state.batch = epoch + 1, 0
            t.step.running.reset()
            # early stopping, trackers, checkpoints, the summary line, a tuner's pruning (which may raise)
            _call(t, "on_epoch_end", t, epoch + 1, metrics)
            if t.stop_training:
                break
            if dist.any_rank(t.stop_requested, t.device):
                raise TrainingInterrupted(preempted=t.preempted)
    t.state.finished = True
    _call(t, "on_fit_end", t)
    return metrics


def _call(t: Trainer, hook: str, *args: Any) -> None:
    for cb in t.callbacks:
        getattr(cb, hook)(*args)


def _epoch_metrics(t: Trainer, epoch: int, train_seconds: float, num_samples: int) -> dict[str, float]:
    """Everything logged for an epoch: train (over all ranks), validation, time, memory, data stats."""
    metrics = {"step": t.state.step, "lr": max(g["lr"] for g in t.optimizer.param_groups),
               **{f"train/{k}": v for k, v in t.step.running.compute(sync=True).items()}}
    if t.data.val is not None:
        with _explained_failures("evaluation", t):
            with t.averaged() as model:
                val = evaluate(model, t.data.val, t.task, device=t.device, precision=t.precision,
                               limit=t.val_limit)
        metrics.update({f"val/{k}": v for k, v in val.items() if k != "num_samples"})
    metrics.update({"time/epoch_s": train_seconds, "time/samples_per_s": num_samples / max(train_seconds, 1e-9),
                    "time/data_wait": t.data_wait})
    metrics.update({f"train/{k}": v for k, v in t.train_batches.epoch_stats(epoch).items()})
    if t.skipped:
        metrics["train/skipped_batches"] = t.skipped
    if t.first_step_seconds is not None and epoch == t.first_epoch:
        metrics["time/first_step_s"] = t.first_step_seconds
    metrics.update(epoch_memory(t.device))
    metrics.update(model_memory(t.model, t.optimizer))
    return metrics


def train_epoch(t: Trainer, epoch: int) -> tuple[float, int]:
    """Train the rest of `epoch` from `t.state.batch`; returns (seconds, samples seen)."""
    t.model.train()
    # e.g. the freeze schedule: which layers train, frozen BatchNorm; hooks count epochs from 1, as the log does
    _call(t, "on_epoch_start", t, epoch + 1)
    total = t.batches_per_epoch
    t.progress.start(f"epoch {epoch + 1}/{t.epochs}", total)
    t.progress.update(t.state.batch)
    start, num_samples = time.perf_counter(), 0
    waited = WaitClock()
    try:
        with _explained_failures("training step", t):
            for inputs, targets in waited.timed(islice(t.train_batches.epoch(epoch, t.state.batch),
                                                       total - t.state.batch)):
                b = t.state.batch
                if t.mix is not None:
                    inputs, targets = t.mix(inputs, targets, epoch, b)
                optimizer_step = (b + 1) % t.cfg.accumulate == 0 or b + 1 == total
                if t.first_step_seconds is None and (t.cfg.compile or t.device.type == "cuda"):
                    t.first_step_seconds = _timed(lambda: train_step(t, inputs, targets, optimizer_step), t.device)
                    start += t.first_step_seconds  # the epoch's time and throughput exclude the warm-up
                else:
                    train_step(t, inputs, targets, optimizer_step)
                hang.beat()
                t.state.batch, num_samples = b + 1, num_samples + batch_len(targets)
                _call(t, "on_step_end", t)
                if (b + 1) % t.cfg.log_every_n_steps == 0 or b + 1 == total:
                    _check_finite(t, wait=False)
                    if t.progress.enabled:  # the statistics cost a host sync: only for a bar someone sees
                        t.progress.update(b + 1, _progress_stats(t, num_samples, start))
                if optimizer_step and _stop_agreed(t):
                    _save_interrupted(t)
                if t.stop_training:  # a callback ended training within the epoch (kiln train --profile-only)
                    break
    finally:
        t.progress.stop()
    _check_finite(t)
    seconds = time.perf_counter() - start
    t.data_wait = waited.seconds / max(seconds, 1e-9)
    return seconds, num_samples


class WaitClock:
    """The host's time spent waiting for the next batch (loading, decoding, augmenting, copying): wall clock around
    the batch iterator's `next`, so it costs no device sync. Under the profiler each wait is a `kiln.data` range."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        it = iter(batches)
        while True:
            began = time.perf_counter()
            with torch.profiler.record_function("kiln.data"):
                try:
                    batch = next(it)
                except StopIteration:
                    return
            self.seconds += time.perf_counter() - began
            yield batch


def train_step(t: Trainer, inputs: Any, targets: torch.Tensor, optimizer_step: bool) -> None:
    """One batch through the shared `TrainStep`; counts optimizer steps and skipped batches."""
    if t.step(t.model, inputs, targets, optimizer_step) is None:
        t.skipped += 1
        log.warning("non-finite loss at epoch %d batch %d: batch skipped", t.state.epoch + 1, t.state.batch)
    elif optimizer_step:
        t.state.step += 1


@dataclass
class TestDetail:
    """What a test asks of `evaluate` beyond the loss and the validation metrics: the task's detailed metrics (per
    class, the confusion matrix) and, with `keep`, a list that receives each batch's task predictions and targets
    (on the device; the caller moves them), e.g. for kiln report."""

    keep: list[tuple[torch.Tensor, torch.Tensor]] | None = None


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, task: Task, *, device: torch.device, precision: str,
             limit: int | None = None, test: TestDetail | None = None) -> dict[str, Any]:
    """Loss and metrics over `batches` in eval mode; one host sync at the end; with `test`, its details too."""
    model = unwrap(model)  # plain forward passes: no DDP hooks
    was_training = model.training
    model.eval()
    with whole(model):  # FSDP: the parameters gathered once, so ranks may run unequal batch counts
        results = score(model_outputs(model, batches, task, device, precision, limit), task, device, test)
    model.train(was_training)
    return results


def model_outputs(model: nn.Module, batches: Batches, task: Task, device: torch.device, precision: str,
                  limit: int | None = None) -> Iterator[tuple[Any, Any]]:
    """(outputs, targets) of each batch: the model's outputs as the loss and metrics take them (fp32)."""
    for inputs, targets in islice(batches.epoch(0), limit):
        with autocast(device, precision):
            outputs = task.outputs(model, inputs)
        hang.beat()
        yield (outputs.float() if isinstance(outputs, torch.Tensor) else outputs), targets  # detections: as given


def score(outputs: Iterable[tuple[Any, Any]], task: Task, device: torch.device,
          test: TestDetail | None = None) -> dict[str, Any]:
    """The loss and the task's metrics over (outputs, targets) batches — one model's, or several models' averaged
    — summed over the ranks; with `test`, the detailed metrics (and the kept predictions)."""
    detailed, keep = test is not None, test.keep if test is not None else None
    metrics = task.metrics(device, detailed)  # torchmetrics syncs across ranks in compute()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for out, targets in outputs:
        loss_sum += task.loss_sum(out, targets)
        metrics.update(out, targets)
        if keep is not None:
            keep.append((task.predictions(out), targets))
        count += batch_len(targets)
    totals = dist.all_reduce(torch.stack([loss_sum, loss_sum.new_tensor(count)]))  # every rank's share of the split
    results: dict[str, Any] = {"loss": totals[0].item() / max(totals[1].item(), 1), "num_samples": int(totals[1])}
    computed = metrics.compute()
    task.check_computed(computed)
    for name, value in computed.items():
        results[name] = value.item() if value.ndim == 0 else value.tolist()
    return results


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@contextmanager
def _explained_failures(phase: str, t: Trainer) -> Iterator[None]:
    """Failures with a known cause get a message instead of a traceback. CUDA out of memory: what ran out, the
    peak, and a batch size to try (last.pt is untouched). `view` on a tensor whose memory layout it cannot
    view: what to change in the model."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        snapshot = dump_memory_snapshot(t.memory_snapshot)
        raise TrainingStopped(out_of_memory_message(phase, t.device, t.train_batches.batch_size, t.model, t.optimizer,
                                                    t.cfg.accumulate, snapshot)) from None
    except (RuntimeError, AssertionError) as e:
        raise _explained(e, phase, t.device) from None


def _explained(e: Exception, phase: str, device: torch.device) -> Exception:
    """A KilnError saying what to change, for failures of a user's model whose cause is known; else `e`."""
    text = str(e)
    if "view size is not compatible with input tensor's size and stride" in text:
        return KilnError(f"the model's forward failed in the {phase}: `.view()` on a tensor whose memory layout it "
                         "cannot view (e.g. after a convolution in channels_last layout). Use `.reshape(...)` or "
                         "`.flatten(1)` instead of `.view(...)` in the model, or set trainer.channels_last=false")
    moved = ("Expected all tensors to be on the same device", "Torch not compiled with CUDA", "No CUDA GPUs",
             "Found no NVIDIA driver")
    if any(m in text for m in moved):
        return KilnError(f"the model's forward failed in the {phase}: it puts tensors on another device than the "
                         f"one kiln trains on ({device}): {first_line(e)}. In forward, create tensors on the "
                         "input's device (`x.device`) instead of calling .to('cuda')/.cuda(); kiln moves the model "
                         "and the batches (trainer.device)")
    return e


def _stop_agreed(t: Trainer) -> bool:
    """After an optimizer step: has a stop been asked for? Ranks agree every log_every_n_steps steps."""
    if not dist.current().distributed:
        return t.stop_requested
    return t.state.step % t.cfg.log_every_n_steps == 0 and dist.any_rank(t.stop_requested, t.device)


def _check_finite(t: Trainer, wait: bool = True) -> None:
    """Stop on a NaN/Inf loss. wait=False (during the epoch) may notice it one check late but never waits for
    the GPU; the checks at the epoch's end and before saving wait."""
    if t.cfg.nan_policy == "stop" and t.step.nonfinite.seen(wait):
        raise TrainingStopped(
            f"the training loss became NaN/Inf in epoch {t.state.epoch + 1} (by batch {t.state.batch}). "
            "The last good checkpoint (checkpoints/last.pt) is kept. Lower optim.lr, set trainer.grad_clip, "
            "check the data for bad values, or use trainer.nan_policy=skip_batch")


def _save_interrupted(t: Trainer) -> None:
    _check_finite(t)  # never save NaN weights
    _call(t, "on_interrupt", t)
    raise TrainingInterrupted(preempted=t.preempted)


@contextmanager
def _stop_on_signals(t: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM ask for a stop after the current step; a second SIGINT stops at once. SIGUSR1 (SLURM's
    warning before a preemption or the time limit) does the same and marks the stop as a preemption."""

    def request_stop(signum: int, frame: Any) -> None:
        if t.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        t.stop_requested = True
        t.preempted = t.preempted or signum == getattr(signal, "SIGUSR1", None)
        log.warning("%s received: finishing the current step and saving last.pt ...", signal.Signals(signum).name)

    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
    try:
        previous = {s: signal.signal(s, request_stop) for s in signals}
    except ValueError:  # not the main thread (e.g. a tuning worker): leave signals alone
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _progress_stats(t: Trainer, num_samples: int, start: float) -> str:
    stats = t.step.running.compute()  # one sync every log_every_n_steps
    rate = num_samples / max(time.perf_counter() - start, 1e-9)
    name = t.task.train_metric
    metric = f"  {name} {stats[name]:.3g}" if name else ""
    return f"loss {stats['loss']:.4f}{metric}  {rate:,.0f} samples/s"


__all__ = ["LoopState", "Trainer", "TrainingInterrupted", "evaluate", "fit", "set_rng_state"]
