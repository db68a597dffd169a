"""kiln cv CONFIG [key=value ...] --folds N [--test] | kiln cv --resume CV_DIR"""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation: one run per fold, then mean and std",
                       description="Cut the training split into N folds (stratified where kiln knows the targets: by "
                                   "class, iteratively by label, by value quantiles; by position for your own "
                                   "Dataset) and train one ordinary run per fold in <log.dir>/<name>/cv-<timestamp>/"
                                   "fold-K/: the held-out fold is that run's test split; model selection uses a "
                                   "validation split of the other folds, never the held-out one. Prints each fold's "
                                   "held-out metrics (accuracy and macro F1; micro/macro F1 and mAP; MAE, RMSE and "
                                   "R², by task.name) and loss with their mean and std, and writes cv.json. "
                                   "--test also scores each fold's best model on the real test split and the "
                                   "ensemble of their averaged predictions. A killed cv continues with --resume.",
                       epilog="examples:\n  kiln cv configs/fashion_mnist.yaml --folds 5 trainer.epochs=5\n"
                              "  kiln cv --resume runs/fashion_mnist/cv-20260101-120000 --test",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", metavar="CONFIG")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--test", action="store_true", help="also evaluate every fold model and their ensemble on the "
                                                       "test split")
    p.add_argument("--resume", metavar="CV_DIR", help="continue a killed cv: the folds that did not finish")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.commands.cv import fold_metrics, load_plan, run_cv
    from kiln.config import load_config
    from kiln.core.errors import KilnError
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    if args.resume:
        cfg, folds = load_plan(Path(args.resume))
    elif args.config:
        cfg, folds = load_config(args.config, args.overrides), args.folds
    else:
        raise KilnError("kiln cv needs a config file (or --resume CV_DIR)")
    from kiln.train.preflight import preflight

    preflight(cfg)  # before the cv folder is made
    summary = run_cv(cfg, folds, test=args.test, resume=Path(args.resume) if args.resume else None)
    metrics = fold_metrics(cfg)
    print(f"{'fold':>5} " + " ".join(f"{m:>8}" for m in metrics))
    for row in summary["folds"]:
        print(f"{row['fold']:>5} " + " ".join(f"{row[m]:8.4f}" for m in metrics))
    held = summary["held_out"]
    print(f"{'mean':>5} " + " ".join(f"{held[m]['mean']:8.4f}" for m in metrics))
    print(f"{'std':>5} " + " ".join(f"{held[m]['std']:8.4f}" for m in metrics))
    if "test" in summary:
        t = summary["test"]
        m = t["metric"]
        print(f"test split: fold models' mean {m} {t[f'{m}_mean']:.4f}, their ensemble {t[f'ensemble_{m}']:.4f}")
    print(f"wrote {Path(summary['folder']) / 'cv.json'}")
    return 0
