"""kiln schema: print the JSON Schema of the config."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of config files",
                       description="Print the JSON Schema of kiln config files, for editor validation and "
                                   "autocompletion (e.g. `kiln schema > kiln.schema.json`, then point the YAML "
                                   "language server at it).")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from kiln.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0
