"""MkDocs hook: the reference page is generated from the code at every build, so it cannot drift — every config key
(kiln's schema, with its documentation) and every command with its flags (argparse's own help)."""

from __future__ import annotations

COMMANDS, KEYS = "<!-- kiln:commands -->", "<!-- kiln:config-keys -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if COMMANDS in markdown:
        markdown = markdown.replace(COMMANDS, commands())
    if KEYS in markdown:
        from kiln.config import schema_markdown

        markdown = markdown.replace(KEYS, schema_markdown())
    return markdown


def commands() -> str:
    """Each subcommand's `--help`, as the CLI prints it."""
    import os

    from kiln.cli import _parsers

    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal: one width for the page
    _, parsers = _parsers()
    return "\n\n".join(f"### kiln {name}\n\n```text\n{parser.format_help().rstrip()}\n```"
                       for name, parser in sorted(parsers.items()))
