"""`kiln train CONFIG --find-batch-size`: the largest training batch that fits in GPU memory.

Double the batch size until a training step runs out of memory, then binary-search between the last size
that fitted and the first that did not, freeing cached memory between probes.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable

import torch
import torch.nn.functional as F

from kiln.errors import KilnError

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


def cuda_probe(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sample: torch.Tensor, num_classes: int,
               device: torch.device, precision: str) -> Callable[[int], bool]:
    """fits(n): do two training steps with a batch of n samples fit in memory? (on copies; nothing changes)"""
    from kiln.train.device import autocast

    def fits(n: int) -> bool:
        trial_model = copy.deepcopy(model)
        trial_optim = type(optimizer)(trial_model.parameters(), **optimizer.defaults)
        try:
            reps = -(-n // len(sample))
            x = sample.repeat(reps, *([1] * (sample.ndim - 1)))[:n].to(device)
            y = torch.randint(0, num_classes, (n,), device=device)
            for _ in range(2):
                with autocast(device, precision):
                    loss = F.cross_entropy(trial_model(x), y)
                loss.backward()
                trial_optim.step()
                trial_optim.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            log.info("batch size %d fits (peak %.0f MiB)", n, torch.cuda.max_memory_allocated(device) / 2**20)
            return True
        except torch.cuda.OutOfMemoryError:
            log.info("batch size %d runs out of memory", n)
            return False
        finally:
            del trial_model, trial_optim
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

    return fits


def find_batch_size(cfg, limit: int = 2**16) -> int:
    from kiln.data import build_data
    from kiln.models import build_model
    from kiln.train.device import resolve_device, resolve_precision
    from kiln.train.optim import build_optimizer

    device = resolve_device(cfg.trainer.device)
    if device.type != "cuda":
        raise KilnError(f"--find-batch-size measures GPU memory and needs a CUDA device; this run would train on "
                        f"{device.type}, where memory is rarely what limits the batch size")
    data = build_data(cfg.data, seed=cfg.seed, device=device, splits=("train",))
    sample, _ = next(iter(data.train.epoch(0)))
    if not isinstance(sample, torch.Tensor):
        raise KilnError("--find-batch-size supports image data (fixed-size inputs) only")
    model = build_model(cfg.model, data.info).to(device)
    optimizer = build_optimizer(cfg.optim, model, device)
    fits = cuda_probe(model, optimizer, sample, data.info.num_classes, device,
                      resolve_precision(cfg.trainer.precision, device))
    return search(fits, cfg.data.batch_size, min(limit, data.sizes["train"]))
