"""kiln baseline CONFIG|RUN_DIR [key=value ...] [--json]"""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, add_verbosity, verbosity
from kiln.core.formats import by_name


def add_parser(sub) -> None:
    p = sub.add_parser("baseline", help="a classical baseline on the same split (does the network earn its keep?)",
                       description="Fit a classical model on the training split of a config's (or a run's) data and "
                                   "score it on the test split (else validation): TF-IDF of kiln's tokens "
                                   "(unigrams + bigrams) + logistic regression for text, logistic regression on "
                                   "pooled, standardised pixels for images. Given a run folder, the result is "
                                   "written into it (baseline.json), printed beside the run's test accuracy and "
                                   "shown by kiln report. Needs scikit-learn (pip install -e .[baseline]).",
                       epilog="examples:\n  kiln baseline configs/text_csv.yaml data.root=my_texts\n"
                              "  kiln baseline runs/image_folder/20260101-120000",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="CONFIG|RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kiln.commands.baseline import run_baseline
    from kiln.runs import RunDir
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    result = run_baseline(Path(args.target), args.overrides)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"baseline: {result['baseline']}")
    names = {"acc": "accuracy", "f1": "macro F1", "f1_micro": "micro F1", "f1_macro": "macro F1", "mae": "MAE",
             "r2": "R²"}
    metrics = [m for m in names if m in result]
    print(f"  {result['split']}: " + ", ".join(f"{names[m]} {result[m]:.4f}" for m in metrics)
          + f"  ({result['num_train']:,} training samples, {result['seconds']:.1f} s)")
    network = RunDir.open(Path(args.target)).test_metrics() if Path(args.target).is_dir() else None
    if network is not None and result["split"] == "test":
        main, scores = metrics[0], by_name(network)  # accuracy, micro F1 or MAE
        gain = (scores[main] - result[main]) * (-1 if main == "mae" else 1)  # MAE: lower is better
        print(f"  the network: test {names[main]} {scores[main]:.4f} ({abs(gain):.4f} {'better' if gain >= 0 else 'worse'}"
              " than the baseline)")
    return 0
