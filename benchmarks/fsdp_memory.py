"""Memory per rank under DDP and FSDP (`trainer.strategy`), through kiln's own strategy code: kiln's text
Transformer at ~80M parameters (d_model 768, 8 layers, ff 3072, a 30k vocabulary), AdamW, a few training steps on
2 processes (gloo on CPU; NCCL on GPUs). Per rank: the bytes of parameters, gradients and AdamW state the rank
holds after the steps (its shards under FSDP), the resident memory added since the imports (which also counts
freed memory the allocator keeps, and the whole model built on every rank before it is sharded), the peak, and
the median step time.

    python benchmarks/fsdp_memory.py [--nproc 2] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def local(t):
    """A DTensor's shard on this rank (FSDP), else the tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def worker(strategy_name: str, steps: int) -> None:
    import resource

    import torch
    import torch.distributed as tdist

    from kiln.config import build_config
    from kiln.core import dist
    from kiln.data.text import pad_collate
    from kiln.models.text import transformer
    from kiln.train.strategy import Strategy

    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else torch.device("cpu")
    dist.setup(device, "nccl" if device.type == "cuda" else "gloo")
    before = rss_mib()
    cfg = build_config({"trainer": {"strategy": strategy_name}})
    torch.manual_seed(0)
    model = transformer(30_000, 4, d_model=768, heads=12, layers=8, ff=3072, dropout=0.0, max_len=64).to(device)
    params = sum(p.numel() for p in model.parameters())
    spread = Strategy.of(cfg.trainer, dist.current().world_size)
    model = spread.wrap(spread.prepare(model, "32", device), device, frozen=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(dist.current().rank)
    times = []
    for _ in range(steps):
        batch = pad_collate([torch.randint(2, 30_000, (64,), generator=g) for _ in range(4)], 0).to(device)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(batch), torch.zeros(4, dtype=torch.long, device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    state = [p for p in model.parameters()] + [p.grad for p in model.parameters() if p.grad is not None] + \
        [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    owned = sum(local(t).numel() * local(t).element_size() for t in state) / 2**20
    held = rss_mib() - before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    rows = dist.gather({"rank": dist.current().rank, "owned_mib": owned, "held_mib": held, "peak_mib": peak, "gpu_peak_mib": gpu,
                        "step_s": statistics.median(times[1:]), "params": params})
    if dist.current().is_main:
        print(json.dumps(rows))
    tdist.barrier()
    dist.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    print("| strategy | parameters | rank | parameters + gradients + AdamW state held | RSS added | peak RSS | "
          "GPU peak | step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("ddp", "fsdp"):
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={args.nproc}", __file__, "--worker", name, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        for row in json.loads(out.stdout.strip().splitlines()[-1]):
            gpu = f"{row['gpu_peak_mib']:,.0f} MiB" if row["gpu_peak_mib"] is not None else "-"
            print(f"| {name} | {row['params'] / 1e6:.1f} M | {row['rank']} | {row['owned_mib']:,.0f} MiB | "
                  f"{row['held_mib']:,.0f} MiB | "
                  f"{row['peak_mib']:,.0f} MiB | {gpu} | {row['step_s']:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
