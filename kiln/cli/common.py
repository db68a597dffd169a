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
