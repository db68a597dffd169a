"""kiln configs [--copy NAME [DEST]]: the configs that come with kiln."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("configs", help="list the configs that come with kiln, or copy one out to edit",
                       description="List the shipped configs (package data: they come with every install) with their "
                                   "one-line descriptions. Each runs by name — kiln train fashion_mnist — and a file "
                                   "path always wins over a name. --copy writes one out exactly as shipped, comments "
                                   "included, to edit, with the configs its base: chain names beside it (and only "
                                   "there: each base: line names its copy). It never overwrites a file without --force.",
                       epilog="examples:\n  kiln configs\n  kiln train fashion_mnist trainer.epochs=3\n"
                              "  kiln configs --copy image_folder my_photos.yaml\n  kiln tune tune/fashion_mnist",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copy", nargs="+", metavar=("NAME", "DEST"),
                   help="write shipped config NAME to DEST (a file or folder; default: ./NAME.yaml)")
    p.add_argument("--force", action="store_true", help="with --copy: replace files that already exist")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.core.errors import KilnError
    from kiln.core.shipped import copy, description, shipped

    if args.copy:
        if len(args.copy) > 2:
            raise KilnError("--copy takes a config name and, optionally, where to write it: --copy NAME [DEST]")
        for path in copy(args.copy[0], Path(args.copy[1]) if len(args.copy) == 2 else None, args.force):
            print(f"wrote {path}")
        return 0
    configs = shipped()
    if not configs:
        raise KilnError("this kiln install has no shipped configs (kiln/configs/ is missing); reinstall kiln")
    width = max(map(len, configs))
    for name, path in configs.items():
        print(f"{name:<{width}}  {description(path)}")
    return 0
