"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bar")
    group.add_argument("-v", "--verbose", action="store_true", help="debug messages too")


def verbosity(args: argparse.Namespace) -> int:
    return -1 if args.quiet else (1 if args.verbose else 0)


def split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    """`CONFIG key=value ...`: the first item is the config file unless it is an override."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


OVERRIDES_HELP = "config overrides as dotted key paths, e.g. optim.lr=0.05 trainer.epochs=3 data.batch_size=128"

TTA_HELP = ("hflip (the image and its mirror), flips (and upside down, and both), crops:N (the first N of: the "
            "whole image, its centre and four corner crops of 87.5%% of each side resized back, then the same "
            "mirrored; N up to 12)")


def weight_list(text: str) -> list[float]:
    """--weights 2,1,1 (argparse's type: a bad value is a usage error naming it)."""
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas, e.g. 2,1,1") from None
