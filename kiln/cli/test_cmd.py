"""kiln test RUN_DIR [--checkpoint best|last|PATH] [key=value ...]"""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, TTA_HELP, add_verbosity, verbosity, weight_list
from kiln.core.formats import by_name


def add_parser(sub) -> None:
    p = sub.add_parser("test", help="evaluate a trained run on the test split",
                       description="Evaluate a run's checkpoint on the test split; writes test_metrics.json "
                                   "(multiclass: loss, accuracy, top-5, macro F1, per-class accuracy, confusion "
                                   "matrix; multilabel: micro/macro F1, mAP, per label; regression: MAE, RMSE, R²) "
                                   "into the run folder and prints a table. On other data (data.root=OTHER, another "
                                   "test split) the results go to their own file, test_metrics-<folder>.json or "
                                   "--out, and name the data scored: the run's own test results stay the run's.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. runs/fashion_mnist/20260101-120000, or a "
                                                      "`kiln cv` folder (its folds' ensemble)")
    p.add_argument("rest", nargs="*", metavar="[RUN_DIR ...] KEY=VALUE",
                   help=f"more runs (scored with the first as one ensemble: their averaged answers), then "
                        f"{OVERRIDES_HELP} (e.g. data.root=...)")
    p.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                   help="which checkpoint to evaluate (default: best)")
    p.add_argument("--tta", metavar="VIEWS", help=f"test-time augmentation, the answers averaged over views of each "
                                                  f"image: {TTA_HELP}")
    p.add_argument("--weights", metavar="W,W,...", type=weight_list,
                   help="an ensemble's weights, one per run in order (default: equal)")
    p.add_argument("--out", metavar="FILE", help="write the results to FILE (default: test_metrics.json for the run's "
                                                 "own test split, test_metrics-<data>.json for other data, "
                                                 "test_metrics-tta-<views>.json with --tta, "
                                                 "test_metrics-ensemble.json in the first run for an ensemble)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from kiln.tasks import task_class
    from kiln.track.console import setup_logging
    from kiln.train.evaluation import run_test

    setup_logging(verbosity(args))
    runs, overrides = runs_and_overrides(args.run_dir, args.rest)
    results = run_test(runs, checkpoint=args.checkpoint, overrides=overrides, out=Path(args.out) if args.out else None,
                       tta=args.tta, weights=args.weights)
    scored = results.get("data")
    what = "test split" if not scored else f"data.root={scored['root']}" if scored.get("root") else "other data"
    scored_with = results["checkpoint"] if "ensemble" in results else \
        f"{Path(results['checkpoint']).name} (epoch {results['epoch']})"
    table = Table(title=f"{what} — {scored_with}" + (f", TTA {results['tta']}" if results.get("tta") else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    task = task_class(results["task"])
    scores = by_name(results)
    for key in task.summary_metrics:
        if scores.get(key) is not None:
            table.add_row(key, f"{scores[key]:.4f}")
    table.add_row("samples", f"{results['num_samples']:,}")
    Console().print(table)
    weakest = task.weakest(results)
    if weakest:
        print(weakest)
    print(f"wrote {results['file']}")
    return 0


def runs_and_overrides(first: str, rest: list[str]) -> tuple[list[str], list[str]]:
    """The runs (the first, then every argument before the first KEY=VALUE) and the overrides after them."""
    from kiln.core.errors import KilnError

    runs = [first]
    while rest and "=" not in rest[0]:
        runs.append(rest.pop(0))
    if bad := [o for o in rest if "=" not in o]:
        raise KilnError(f"override {bad[0]!r} is not of the form key.path=value (runs come before the overrides)")
    return runs, rest
