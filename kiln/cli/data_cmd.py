"""kiln data pack SRC DEST [--shard-size 1GB]"""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="work with datasets: pack a source into WebDataset shards",
                       description="Dataset tools. `kiln data pack SRC DEST` writes any kiln image source as "
                                   "WebDataset tar shards (data.name: webdataset reads them, locally or from an "
                                   "object store).",
                       epilog="example:\n  kiln data pack data/pets shards/pets --shard-size 500MB\n"
                              "  kiln train configs/image_folder.yaml data.name=webdataset "
                              "'data.urls={train: \"shards/pets/train-{000000..000003}.tar\"}'",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pack = actions.add_parser("pack", help="write an image source as WebDataset tar shards",
                              description="Write the samples of SRC — a config (its data section) or a folder: a "
                                          "saved Hugging Face dataset or Parquet files, train.csv of image paths, or "
                                          "class folders — as tar shards in DEST: per split `<split>-000000.tar`, "
                                          "... (each image's original bytes and its class as .cls; the training "
                                          "samples in a seeded order, so each shard mixes the classes) and "
                                          "classes.txt. Prints the data.urls to train on them.",
                              epilog="example:\n  kiln data pack data/pets shards/pets --shard-size 500MB",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    pack.add_argument("source", metavar="SRC", help="a config file, or a folder holding an image dataset")
    pack.add_argument("dest", metavar="DEST", help="the folder to write the shards into (must hold none yet)")
    pack.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    pack.add_argument("--shard-size", default="1GB", metavar="SIZE",
                      help="the most bytes per shard, e.g. 1GB, 500MB, 64MiB (default 1GB)")
    pack.add_argument("--seed", type=int, default=0, help="of the training samples' order in the shards (default 0)")
    add_verbosity(pack)
    pack.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.commands.pack import pack
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    packed = pack(Path(args.source), Path(args.dest), args.overrides, args.shard_size, args.seed)
    for split, files in packed.shards.items():
        print(f"{split}: {packed.samples[split]} samples in {len(files)} shard(s)")
    print(f"wrote {packed.dest} ({len(packed.class_names)} classes in classes.txt); train on it with:")
    print(f"  data.name=webdataset '{packed.override()}'")
    return 0
