"""The one place that knows the process rank, and the few collectives the loop needs.

With one process every helper is a no-op, so the training loop reads the same either way.
Launch several with torchrun (`torchrun --nproc-per-node N -m kiln train CONFIG`) or `kiln train --nproc N`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.core import hang, launcher
from kiln.core.errors import KilnError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI answers --help without it
    import torch


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # the processes on this machine (they share its GPUs)

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, metrics and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> ProcessInfo:
    """Rank and world size as set by torchrun (RANK, LOCAL_RANK, WORLD_SIZE) or by srun (SLURM_PROCID, ...; see
    kiln.core.launcher); one process otherwise."""
    launch = launcher.detect()
    return ProcessInfo(launch.rank, launch.local_rank, launch.world_size, launch.tasks_on_node)


def setup(device: torch.device, backend: str, timeout_s: float = 600) -> None:
    """Join the process group with `backend` (nccl or gloo); each rank uses its own GPU (`device`). `timeout_s`:
    trainer.dist_timeout — the group's own timeout is longer, so kiln's hang watch (kiln.core.hang) reports a
    stalled rank before a collective gives up with a bare error."""
    import torch
    import torch.distributed as dist

    if not current().distributed or dist.is_initialized():
        return
    launch = launcher.detect()
    launcher.check_layout(launch, backend)
    launcher.export(launch)  # a SLURM task's ranks and rendezvous as torchrun's variables, for env://
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_s * 1.5 + 30)
    try:
        store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
        # Keys per restart attempt: after torchrun restarts a failed group, no rank may read the connection
        # details that the previous attempt's ranks left in a store that outlives them.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"kiln/attempt_{attempt}", store)
        dist.init_process_group(backend, store=store, rank=rank,
                                world_size=world_size, timeout=timeout)
    except Exception as e:  # noqa: BLE001 — a rank that never joins, an unreachable MASTER_ADDR
        raise KilnError(f"rank {current().rank} could not join the process group within {timeout}: {e}") from None


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place over all ranks (sum or max); returns the tensor."""
    if _active():
        import torch.distributed as dist

        with hang.waiting(f"all_reduce ({op})"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        with hang.waiting("barrier"):
            dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any: stop and NaN decisions are taken together."""
    if not _active():
        return flag
    import torch

    return bool(all_reduce(torch.tensor([int(flag)], device=device), "max").item())


def gather(obj: Any) -> list[Any]:
    """Every rank's value of a small picklable object, in rank order, on every rank."""
    if not _active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    with hang.waiting("all_gather_object"):
        dist.all_gather_object(out, obj)
    return out


def gather_samples(items: list[Any]) -> list[Any]:
    """Every rank's per-sample items of an evaluation split, back in the split's order, on every rank. Evaluation
    shards are dealt round-robin (kiln.data.loaders.EpochBatchSampler: rank r holds samples r, r + W, r + 2W, ...),
    so sample i*W + r is rank r's i-th. Order matters to metrics that break ties by it (mAP)."""
    shards = gather(items)
    out = []
    for i in range(max((len(s) for s in shards), default=0)):
        out += [shard[i] for shard in shards if i < len(shard)]
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's value of a small picklable object, on every rank."""
    if not _active():
        return obj
    import torch.distributed as dist

    box = [obj]
    with hang.waiting("broadcast_object_list"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same_config(config: dict[str, Any]) -> None:
    """Every rank must train the same config; a mismatch is an error on all ranks, not a hang later."""
    if not _active():
        return
    import torch.distributed as dist

    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    digests: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        differing = [r for r, d in enumerate(digests) if d != digests[0]]
        raise KilnError(f"ranks disagree on the config: ranks {differing} differ from rank 0; launch every rank "
                        "with the same config file and overrides")
