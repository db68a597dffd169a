"""`kiln train CONFIG --find-batch-size`: the largest training batch that fits in GPU memory.

Double the batch size until a training step runs out of memory, then binary-search between the last size
that fitted and the first that did not, freeing cached memory between probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from kiln.core.errors import KilnError
from kiln.train.step import TrainStep

if TYPE_CHECKING:
    from kiln.config import Config

log = logging.getLogger("kiln")


def search(fits: Callable[[int], bool], start: int, limit: int) -> int:
    """The largest size in [1, limit] for which fits(size) holds, assuming it holds below some threshold."""
    size, good, bad = max(1, start), 0, None
    while size <= limit:  # grow by powers of two
        if not fits(size):
            bad = size
            break
        good, size = size, size * 2
    if bad is None:
        return good if good else 0
    if good == 0:  # even the starting size is too large: search below it
        good, bad = 0, bad
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's allocator, and cuBLAS/cuDNN failing to get their workspaces, all mean "does not fit"."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(s in text for s in (
        "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "out of memory"))


def cuda_probe(build: Callable[[], tuple[torch.nn.Module, TrainStep]], sample: Any, targets: torch.Tensor,
               device: torch.device) -> Callable[[int], bool]:
    """fits(n): do two training steps with a batch of n samples fit in memory? `build` makes a fresh model and
    the training step `kiln train` runs (its optimizer built by the same builder), so nothing is shared."""

    def fits(n: int) -> bool:
        model = step = None
        try:
            model, step = build()
            reps = -(-n // len(sample))
            x = sample.repeat(reps, *([1] * (sample.ndim - 1)))[:n].to(device)
            y = targets.repeat(reps, *([1] * (targets.ndim - 1)))[:n].to(device)
            for _ in range(2):
                step(model, x, y)
            torch.cuda.synchronize(device)
            log.info("batch size %d fits (peak %.0f MiB)", n, torch.cuda.max_memory_allocated(device) / 2**20)
            return True
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            log.info("batch size %d runs out of memory", n)
            return False
        finally:
            del model, step
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

    return fits


def find_batch_size(cfg: Config, limit: int = 2**16) -> int:
    from kiln.config.files import with_overrides
    from kiln.data import fresh_encoder
    from kiln.train.build import build_trainer
    from kiln.train.plan import RunPlan

    # Every probe steps the optimizer once per batch, with no schedule to run past its end.
    cfg = with_overrides(cfg, ["trainer.accumulate=1", "trainer.nan_policy=stop", "schedule.name=none"])
    plan = RunPlan.of(cfg)
    device = plan.device
    if device.type != "cuda":
        raise KilnError(f"--find-batch-size measures GPU memory and needs a CUDA device; this run would train on "
                        f"{device.type}, where memory is rarely what limits the batch size")
    data = plan.data(("train",), vocab=fresh_encoder(cfg))
    sample, targets = next(iter(data.require("train").epoch(0)))
    if not isinstance(sample, torch.Tensor):
        raise KilnError("--find-batch-size supports image data (fixed-size inputs) only")

    def build() -> tuple[torch.nn.Module, TrainStep]:
        t = build_trainer(plan, data)  # a fresh model, its optimizer and step, as kiln train builds them
        return t.model, t.step

    fits = cuda_probe(build, sample, targets, device)
    return search(fits, cfg.data.batch_size, min(limit, data.sizes["train"]))
