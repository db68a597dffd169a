"""kiln new DIR [--template image|text|folder] [--from PROJECT] [--force]"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("new", help="start a project: config, model, Dataset, smoke test, README",
                       description="Write a small runnable project into DIR: configs/train.yaml wired to your own code "
                                   "(code_dir puts the project on the import path), my_project/models.py and "
                                   "my_project/data.py (a documented nn.Module and Dataset on generated data), "
                                   "tests/test_smoke.py, README.md and .gitignore. `kiln train configs/train.yaml` "
                                   "works in it at once. DIR must be empty unless --force.",
                       epilog="examples:\n  kiln new pets && cd pets && kiln train configs/train.yaml\n"
                              "  kiln new mnist-kiln --from ~/code/my-pytorch-template-project",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--template", default="image", choices=["image", "text", "folder", "task", "segmentation",
                                                           "detection"],
                   help="image (default): a CNN on generated shapes; text: word embeddings on generated sentences "
                        "with a padding collate; folder: your pictures in data/photos/<class>/ (generated "
                        "samples to start with); task: a task of your own (my_project/tasks.py: ordinal "
                        "regression over ordered classes, its loss and metrics) on generated images; "
                        "segmentation: images and masks in data/scenes/ (generated), kiln's U-Net; detection: COCO "
                        "files in data/boxes/ (generated), a torchvision detector")
    p.add_argument("--from", dest="from_project", metavar="PROJECT",
                   help="bring over a pytorch-template project: write DIR/configs/train.yaml equivalent to "
                        "PROJECT/config.json (its model, loss, optimizer, scheduler, data, monitor, early stop), "
                        "using the project's code where it is; what cannot be mapped is listed")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR (same-name files are replaced)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.commands.new_project import new_project

    from_project = Path(args.from_project) if args.from_project else None
    written = new_project(Path(args.dir), args.template, args.force, from_project)
    print(f"wrote {len(written)} files into {args.dir}:")
    for path in written:
        print(f"  {path}")
    if from_project is not None:
        notes = [line[2:] for line in written[0].read_text().splitlines() if line.startswith("# - ")]
        if notes:
            print("mapped differently, or not at all (also in the config's header and the README):")
            print("\n".join(f"  - {n}" for n in notes))
    print(f"next: cd {args.dir} && kiln train configs/train.yaml")
    return 0
