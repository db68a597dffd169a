"""kiln schema [--markdown [KEY]]: the config's JSON Schema, or a readable table of every key."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the config schema (JSON Schema, or readable with --markdown)",
                       description="Print the JSON Schema of kiln config files, for editor validation and "
                                   "autocompletion (e.g. `kiln schema > kiln.schema.json`, then point the YAML "
                                   "language server at it). With --markdown: a table per section of every key, its "
                                   "type, default and meaning, for people; KEY narrows it to one section or key.",
                       epilog="examples:\n  kiln schema > kiln.schema.json\n  kiln schema --markdown > CONFIG.md\n"
                              "  kiln schema --markdown trainer.min_steps\n  kiln schema --markdown data.augment",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("key", nargs="?", metavar="KEY", help="with --markdown: only this section or key (e.g. trainer, "
                                                        "data.augment, optim.lr)")
    p.add_argument("--markdown", action="store_true", help="readable Markdown tables instead of JSON Schema")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from kiln.config import json_schema, schema_markdown
    from kiln.core.errors import KilnError

    if args.markdown:
        print(schema_markdown(args.key), end="")
        return 0
    if args.key:
        raise KilnError("KEY narrows the readable form only: kiln schema --markdown KEY")
    print(json.dumps(json_schema(), indent=2))
    return 0
