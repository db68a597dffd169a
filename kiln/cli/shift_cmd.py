"""kiln shift CONFIG_OR_RUN OTHER_FOLDER [--val-like N --out FILE]"""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("shift", help="can a model tell the training images from another folder's? (adversarial "
                                     "validation)",
                       description="Cross-validate a classifier that tells the training images of a config or run "
                                   "from the images under OTHER_FOLDER (e.g. a competition's unlabelled test images) "
                                   "and print its ROC AUC: about 0.5, the sets look alike and the validation score "
                                   "carries over; near 1, they differ and validation will overstate the score there. "
                                   "A run compares the images by its model's features, a config by small pictures "
                                   "and colour histograms. Lists the images each side is surest of; with --val-like, "
                                   "writes the training images most like the other folder's, for data.val_files.",
                       epilog="examples:\n  kiln shift configs/image_folder.yaml data/test_images data.root=data/train\n"
                              "  kiln shift runs/pets/20260101-120000 data/test_images --val-like 0.1 --out val.txt\n"
                              "  kiln train configs/image_folder.yaml data.val_files=val.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="CONFIG_OR_RUN", help="a config (its data.root's images) or a trained run")
    p.add_argument("other", metavar="OTHER_FOLDER", help="the other images: a folder (searched recursively)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--show", type=int, default=5, metavar="K", help="how many of each side's most foreign images "
                                                                    "to list (default 5)")
    p.add_argument("--val-like", type=float, metavar="N", help="write the N training images most like the other "
                                                               "folder's (N below 1: that share) to --out")
    p.add_argument("--out", metavar="FILE", default="val_files.txt",
                   help="--val-like: the list file (default val_files.txt); use it as data.val_files")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kiln.commands.shift import measure_shift, write_val_like
    from kiln.core.errors import KilnError
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    if bad := [o for o in args.overrides if "=" not in o]:
        raise KilnError(f"override {bad[0]!r} is not of the form key.path=value")
    shift = measure_shift(Path(args.source), Path(args.other), args.overrides)
    print(f"ROC AUC {shift.auc:.3f} ({len(shift.train)} training images, {len(shift.other)} others): {shift.verdict}")
    for side, rows in shift.foreign(args.show).items():
        print(f"most foreign {'training' if side == 'train' else 'other'} images (P(other folder)):")
        for path, p in rows:
            print(f"  {p:.3f}  {path}")
    if args.json:
        Path(args.json).write_text(json.dumps(shift.as_json(args.show), indent=2) + "\n")
    if args.val_like is not None:
        out, n = write_val_like(shift, args.val_like, Path(args.out))
        print(f"wrote {out}: the {n} training images most like the other folder's; train with data.val_files={out}")
    return 0
