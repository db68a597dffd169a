"""kiln config CONFIG [key=value ...]: print the fully resolved config."""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="print the fully resolved config",
                       description="Validate CONFIG with its base files and overrides, and print the result "
                                   "with every default filled in (YAML, or JSON with --json).")
    p.add_argument("config", metavar="CONFIG", help="config file (YAML or JSON)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from kiln.config import load_config, to_yaml
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))  # -q: no deprecation warnings around the printed config
    cfg = load_config(args.config, args.overrides)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2) if args.json else to_yaml(cfg), end="\n" if args.json else "")
    return 0
