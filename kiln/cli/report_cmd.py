"""kiln report RUN_DIR [RUN_DIR ...]: a self-contained HTML report with figures."""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write report.html with curves, confusion matrix, mistakes; compare runs",
                       description="Write a self-contained report.html (images embedded; opens offline in any "
                                   "browser) and every figure as PNG and SVG in RUN_DIR/figures/: loss/accuracy "
                                   "curves with the best epoch and the learning rate, the test confusion matrix "
                                   "(counts and row-normalised), per-class precision/recall/F1, and the most "
                                   "confident mistakes. With several runs: their curves overlaid and a table of "
                                   "config differences.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE",
                   help="where to write the HTML (default: RUN_DIR/report.html, or ./report.html for several runs)")
    p.add_argument("--mistakes", type=int, default=12, metavar="N", help="how many mistakes to show (default 12)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.commands.report import build
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    out = build([Path(r) for r in args.run_dirs], Path(args.out) if args.out else None, args.mistakes)
    print(f"wrote {out}")
    return 0
