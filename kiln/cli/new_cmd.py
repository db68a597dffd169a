"""kiln new DIR [--template image|text|folder] [--force]"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("new", help="start a project: config, model, Dataset, smoke test, README",
                       description="Write a small runnable project into DIR: configs/train.yaml wired to your own code "
                                   "(code_dir puts the project on the import path), my_project/models.py and "
                                   "my_project/data.py (a documented nn.Module and Dataset on generated data), "
                                   "tests/test_smoke.py, README.md and .gitignore. `kiln train configs/train.yaml` "
                                   "works in it at once. DIR must be empty unless --force.",
                       epilog="example:\n  kiln new pets && cd pets && kiln train configs/train.yaml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--template", default="image", choices=["image", "text", "folder"],
                   help="image (default): a CNN on generated shapes; text: word embeddings on generated sentences "
                        "with a padding collate; folder: your pictures in data/photos/<class>/ (generated "
                        "samples to start with)")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR (same-name files are replaced)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.new_project import new_project

    written = new_project(Path(args.dir), args.template, args.force)
    print(f"wrote {len(written)} files into {args.dir}:")
    for path in written:
        print(f"  {path}")
    print(f"next: cd {args.dir} && kiln train configs/train.yaml")
    return 0
