"""Memory: a per-epoch memory line in the metrics and a clear message when CUDA runs out of memory (the warning
when memory grows every epoch is a callback: kiln.train.callbacks.memory_watch)."""

from __future__ import annotations

import logging
import os

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


def out_of_memory_message(phase: str, device: torch.device, batch_size: int) -> str:
    peak = (f"{torch.cuda.max_memory_allocated(device) / MIB:,.0f} MiB allocated at peak, "
            f"{torch.cuda.get_device_properties(device).total_memory / MIB:,.0f} MiB on the device"
            if device.type == "cuda" and torch.cuda.is_available() else "peak unknown")
    return (f"out of memory in the {phase} ({peak}) with batch size {batch_size}. Try "
            f"data.batch_size={max(1, batch_size // 2)}, trainer.precision=bf16 (or 16), or let kiln find the "
            "largest batch that fits: kiln train CONFIG --find-batch-size. last.pt from the last finished "
            "epoch is intact")
