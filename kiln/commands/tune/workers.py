"""`kiln tune --workers N`: N spawned processes on one study, each with its share of the trials and of the CPU
threads, or its own GPU."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kiln.commands.tune.objective import Share, optimize
from kiln.commands.tune.space import base_raw

log = logging.getLogger("kiln")


def _worker(tune_path: str, overrides: list[str], tune_dir: str, storage: str, study_name: str,
            gpu: str | None, share: Share) -> None:
    """A parallel worker process (spawned): the same study, its own share of CPU threads or its own GPU."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from kiln.commands.tune.space import load_tune_config
    from kiln.track.console import setup_logging

    setup_logging(-1)
    tune = load_tune_config(Path(tune_path))
    optimize(tune, base_raw(tune, overrides), Path(tune_dir), storage, study_name, share)


def run_parallel(tune_path, overrides, tune_dir, url, study_name, workers: int, remaining: int) -> None:
    """Split the remaining trials between the workers up front, so together they run exactly that many."""
    import multiprocessing as mp

    import torch

    gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    shares = [Share(threads, remaining // workers + (i < remaining % workers), i) for i in range(workers)]
    procs = [ctx.Process(target=_worker, args=(str(tune_path), list(overrides), str(tune_dir), url, study_name,
                                               gpus[i % len(gpus)] if gpus else None, share))
             for i, share in enumerate(shares)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        log.warning("%d tune worker(s) exited with errors (codes %s)", len(failed), failed)


def visible_gpus(visible: str | None, count: int) -> list[str]:
    """The GPU ids to hand out to workers: the entries of an existing CUDA_VISIBLE_DEVICES (ids or UUIDs),
    else 0..count-1. A worker's CUDA_VISIBLE_DEVICES must name a GPU the parent may use, not its index."""
    if visible is None:
        return [str(i) for i in range(count)]
    return [v.strip() for v in visible.split(",") if v.strip()][:count]
