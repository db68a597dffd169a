"""Memory: a per-epoch memory line in the metrics and a clear message when CUDA runs out of memory (the warning
when memory grows every epoch is a callback: kiln.train.callbacks.memory_watch)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("kiln")
MIB = 2**20


def host_rss_mib() -> float:
    """This process's resident memory now (Linux /proc; ru_maxrss peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_memory(device: torch.device) -> dict[str, float]:
    """mem/* metrics for the epoch just finished; resets the CUDA peak for the next one."""
    stats = {"mem/host_rss_mib": round(host_rss_mib(), 1)}
    if device.type == "cuda":
        stats["mem/cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / MIB, 1)
        stats["mem/cuda_allocated_mib"] = round(torch.cuda.memory_allocated(device) / MIB, 1)
        stats["mem/cuda_reserved_mib"] = round(torch.cuda.memory_reserved(device) / MIB, 1)
        torch.cuda.reset_peak_memory_stats(device)
    return stats


def dump_memory_snapshot(path: Path | None) -> str | None:
    """CUDA's recorded allocation history written to `path` (trainer.memory_snapshot), or None."""
    if path is None or not torch.cuda.is_available():
        return None
    try:
        torch.cuda.memory._dump_snapshot(str(path))
    except Exception as e:  # noqa: BLE001 — the message must still say what ran out
        log.warning("could not write the memory snapshot %s: %s", path, e)
        return None
    return str(path)


def model_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
    """MiB held by the parameters, their gradients and the optimizer's state (this rank's share under FSDP): the
    memory that does not depend on the batch."""
    def mib(tensors: Iterable[Any]) -> float:
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) / MIB

    params = list(model.parameters())
    state = [v for s in (optimizer.state.values() if optimizer is not None else []) for v in s.values()]
    return {"mem/params_mib": round(mib(params), 1), "mem/grads_mib": round(mib(p.grad for p in params), 1),
            "mem/optimizer_mib": round(mib(state), 1)}


def out_of_memory_message(phase: str, device: torch.device, batch_size: int, model: torch.nn.Module | None = None,
                          optimizer: torch.optim.Optimizer | None = None, accumulate: int = 1,
                          snapshot: str | None = None) -> str:
    """What ran out, the peak by category, and the cheapest fix first: the batch's activations are most of it
    (a smaller batch with accumulation keeps the global batch; bf16; activation checkpointing), or the model's own
    memory is (FSDP across GPUs, a leaner optimizer)."""
    cuda = device.type == "cuda" and torch.cuda.is_available()
    peak = torch.cuda.max_memory_allocated(device) / MIB if cuda else None
    total = torch.cuda.get_device_properties(device).total_memory / MIB if cuda else None
    fixed = model_memory(model, optimizer) if model is not None else {}
    held = sum(fixed.values())
    where = (f"{peak:,.0f} MiB allocated at peak, {total:,.0f} MiB on the device" if peak is not None and total
             else "peak unknown")
    split = ""
    if fixed:
        split = (f"; parameters {fixed['mem/params_mib']:,.0f} MiB, gradients {fixed['mem/grads_mib']:,.0f} MiB, "
                 f"optimizer state {fixed['mem/optimizer_mib']:,.0f} MiB"
                 + (f", activations and the rest about {max(peak - held, 0):,.0f} MiB" if peak is not None else ""))
    half = max(1, batch_size // 2)
    batch_fix = (f"data.batch_size={half} trainer.accumulate={accumulate * 2} (the same global batch, half the "
                 "activations), trainer.precision=bf16 (or 16), trainer.activation_checkpointing=true")
    model_fix = ("trainer.strategy=fsdp over several GPUs (each holds 1/N of the parameters, gradients and optimizer "
                 "state), or an optimizer with less state (sgd keeps one buffer, adamw two)")
    fixes = [model_fix, batch_fix] if peak is not None and fixed and held > 0.6 * peak else [batch_fix, model_fix]
    return (f"out of memory in the {phase} ({where}{split}) with batch size {batch_size}. Try, cheapest first: "
            f"{fixes[0]}; or {fixes[1]}; or let kiln find the largest batch that fits: kiln train CONFIG "
            "--find-batch-size." + (f" A memory snapshot of the last steps is in {snapshot} (drag it into "
                                    "https://pytorch.org/memory_viz)." if snapshot else "")
            + " last.pt from the last finished epoch is intact")
