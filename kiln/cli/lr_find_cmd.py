"""kiln lr-find CONFIG [key=value ...]: the learning-rate range test."""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("lr-find", help="find a good learning rate (LR range test)",
                       description="Train a few batches while raising the learning rate exponentially, plot the "
                                   "smoothed loss against it, and suggest the LR where the loss falls fastest. "
                                   "The model starts as `kiln train` would start it and nothing is saved but the "
                                   "plot (runs/<name>/lr-find-<timestamp>/lr_find.png) and the numbers (lr_find.json).")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="batches in the sweep (default 100)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.config import load_config
    from kiln.core.errors import KilnError
    from kiln.track.console import setup_logging
    from kiln.train.lr_find import Span, find_lr

    setup_logging(verbosity(args))
    if not 0 < args.start < args.end:
        raise KilnError(f"--start ({args.start}) must be positive and below --end ({args.end})")
    cfg = load_config(args.config, args.overrides)
    result, folder = find_lr(cfg, Span(args.start, args.end, args.steps))
    key, value = cfg.optim.in_own_form(result.suggestion, cfg.data.batch_size)  # the config's own form
    print(f"suggested learning rate: {result.suggestion:.3g}  (set {key}={value:.2g}"
          f"{'; for one-cycle schedules a few times higher also works' if cfg.schedule.name == 'onecycle' else ''})")
    if result.stopped_early:
        print(f"the loss diverged at lr {result.lrs[-1] * 1.1:.2g}; the sweep stopped there")
    print(f"plot: {Path(folder) / 'lr_find.png'}")
    return 0
