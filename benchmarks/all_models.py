"""Every torchvision classification builder through kiln's library-model route (`model.name: torchvision:NAME`):
built for 10 classes at 64 px, SGD training steps timed after a warm-up step on the CPU at batch 32 — or the reason kiln refuses
the builder at that size. The table goes into benchmarks/RESULTS.md.

    python benchmarks/all_models.py [--size 64] [--batch 32] [--only PATTERN] > table.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def measure(name: str, size: int, batch: int, channels: int, steps: int) -> tuple[str, str, str]:
    from kiln.config import build_config
    from kiln.core.errors import KilnError
    from kiln.data.info import DataInfo
    from kiln.models import build_model
    from kiln.models.freeze import head_prefix

    info = DataInfo("bench", "image", 10, [str(i) for i in range(10)], in_channels=channels, image_size=(size, size))
    try:
        model = build_model(build_config({"model": {"name": f"torchvision:{name}"}}).model, info)
    except KilnError as e:
        return "refused", "-", str(e).split(" (`kiln models`")[0][:160]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, channels, size, size), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 1):  # the first step warms up (allocations, kernel choice)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        if sum(times) > 20:  # a very large model: its first steps are enough for the table
            break
    step = statistics.median(times[1:] or times)
    params = sum(p.numel() for p in model.parameters())
    return f"{batch / step:,.0f}", f"{params / 1e6:.1f}M", f"head `{head_prefix(model)}`"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--only", default="", help="only the builders whose names contain this")
    p.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up (median)")
    p.add_argument("--after", default="", help="start after this builder (to continue a table)")
    args = p.parse_args()
    import torchvision

    from kiln.core.model_names import torchvision_names

    names = [n for n in torchvision_names() if args.only in n and n > args.after]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{args.channels}x{args.size}x{args.size}, batch {args.batch}, 10 classes\n")
    print("| model.name | images/s (train step) | parameters | kiln's head / reason refused |")
    print("|---|---|---|---|")
    for name in names:
        rate, params, note = measure(name, args.size, args.batch, args.channels, args.steps)
        print(f"| torchvision:{name} | {rate} | {params} | {note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
