"""Search efficiency: random search vs TPE vs TPE + ASHA on the same space (a benchmark, not a test).

    python benchmarks/tune_efficiency.py [--trials 12] [--epochs 4] [--subset 5000] [--seeds 0 1]

Each method gets the same number of trials over the same space on a Fashion-MNIST subset; the table shows the
best validation accuracy reached and the training epochs it cost (pruned trials cost fewer). Paste the table
into benchmarks/RESULTS.md with the machine and versions.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "optim.lr": {"type": "float", "low": 1.0e-3, "high": 1.0, "log": True},
    "optim.weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-2, "log": True},
    "model.args.dropout": {"type": "float", "low": 0.0, "high": 0.6},
}
METHODS = {"random": ("random", "none"), "tpe": ("tpe", "none"), "tpe+asha": ("tpe", "asha")}


def run(method: str, seed: int, args, tmp: Path) -> dict:
    from kiln.commands.tune.runner import run_tune
    from kiln.track.console import setup_logging

    setup_logging(-1)
    sampler, pruner = METHODS[method]
    spec = {"base": str(ROOT / "configs" / "fashion_mnist.yaml"), "name": f"bench-{method}-{seed}",
            "metric": "val/acc", "mode": "max", "trials": args.trials, "sampler": sampler, "pruner": pruner,
            "seed": seed, "space": SPACE}
    path = tmp / f"{method}-{seed}.yaml"
    path.write_text(yaml.safe_dump(spec))
    overrides = [f"trainer.epochs={args.epochs}", f"data.train_subset={args.subset}", f"log.dir={tmp}",
                 "log.tensorboard=false", "trainer.test_after_fit=false"]
    tune_dir = run_tune(path, overrides)
    with open(tune_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_trial = sorted(rows, key=lambda r: int(r["trial"]))
    spent, best, best_at_half = 0, 0.0, 0.0
    budget = args.trials * args.epochs
    for r in by_trial:
        spent += int(r["epochs"])
        if r["state"] == "complete":
            best = max(best, float(r["val/acc"]))
        if spent <= budget / 2:
            best_at_half = best
    return {"epochs": spent, "best": best, "half": best_at_half,
            "pruned": sum(r["state"] == "pruned" for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        results = {m: [run(m, s, args, Path(tmp)) for s in args.seeds] for m in METHODS}
    print(f"\n{args.trials} trials x up to {args.epochs} epochs on {args.subset} Fashion-MNIST images, "
          f"seeds {args.seeds} (mean over seeds)")
    print("| method | epochs spent | pruned trials | best val acc | best val acc within half the budget |")
    print("|---|---|---|---|---|")
    for m, rs in results.items():
        mean = lambda k: statistics.mean(r[k] for r in rs)  # noqa: E731
        print(f"| {m} | {mean('epochs'):.0f} | {mean('pruned'):.1f} | {mean('best'):.4f} | {mean('half'):.4f} |")


if __name__ == "__main__":
    main()
