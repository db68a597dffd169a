"""kiln models [PATTERN]: the models kiln builds by name."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the models kiln builds by name (kiln's, torchvision's, timm's)",
                       description="List kiln's own models, every torchvision classifier (parameters at 1,000 classes "
                                   "and input size from torchvision's weight metadata, the weights that exist and "
                                   "whether the default ones are on this machine) and, with a PATTERN, timm's models "
                                   "(when timm is installed). Nothing is built or downloaded.",
                       epilog="examples:\n  kiln models\n  kiln models convnext\n  kiln models 'vit_*'\n"
                              "  kiln train fashion_mnist model.name=torchvision:efficientnet_b0",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", default="",
                   help="part of a name (convnext) or a glob (vit_*); timm's models are listed only with one")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kiln.core.errors import KilnError
    from kiln.models.catalog import kiln_entries, table, timm_entries, torchvision_entries

    entries = kiln_entries(args.pattern) + torchvision_entries(args.pattern)
    entries += timm_entries(args.pattern) if args.pattern else []
    if not entries:
        raise KilnError(f"no model matches {args.pattern!r} (try part of a name, e.g. kiln models resnet)")
    print(table(entries))
    if not args.pattern:
        print("\ntimm's models are listed with a pattern: kiln models 'convnext*'")
    return 0
