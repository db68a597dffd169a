"""kiln average RUN_DIR (--last K | --top-k K)"""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("average", help="average the weights of a run's last or best epochs into one checkpoint",
                       description="Average the weights of a run's kept epoch checkpoints (train with "
                                   "trainer.checkpoint.keep_last_k=K or keep_top_k=K) into checkpoints/averaged.pt, "
                                   "with BatchNorm's statistics measured again over the training split. Test, predict "
                                   "and export it like any checkpoint: --checkpoint averaged.",
                       epilog="example:\n  kiln average runs/pets/20260101-120000 --last 5\n"
                              "  kiln test runs/pets/20260101-120000 --checkpoint averaged",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, metavar="K", help="the K latest kept epochs")
    which.add_argument("--top-k", type=int, metavar="K", help="the K best kept epochs by the run's monitored metric")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: RUN_DIR/checkpoints/averaged.pt)")
    p.add_argument("--no-bn-update", action="store_true",
                   help="keep the average of the epochs' BatchNorm statistics instead of measuring them again")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.commands.average import average_run
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    out = average_run(args.run_dir, last=args.last, top_k=args.top_k, out=Path(args.out) if args.out else None,
                      bn_update=not args.no_bn_update)
    print(f"wrote {out}")
    return 0
