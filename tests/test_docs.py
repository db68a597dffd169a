"""The documentation: the site builds strictly (a broken link or API reference fails), and every `kiln` command
shown in the README and the docs pages is one the CLI accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from kiln.cli import parse

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands(page: Path) -> list[str]:
    """The `kiln ...` command lines of a page's bash blocks (several per line when joined by ; && |)."""
    commands, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = line.strip() in ("```bash", "```sh", "```console")
            continue
        if fenced:
            for part in re.split(r"\s*(?:;|&&|\|\|?|>)\s+", line.split(" #")[0]):
                if part.strip().startswith("kiln "):
                    commands.append(part.strip())
    return commands


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="make test installs mkdocs (the dev extra)")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    api = (tmp_path / "site" / "python" / "index.html").read_text()
    assert "kiln.api.train" in api and "as_frame" in api  # the reference is generated from the docstrings


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_is_accepted_by_the_cli(page):
    commands = shown_commands(page)
    for command in commands:
        try:
            parse(shlex.split(command)[1:])
        except SystemExit as e:  # --help and --version exit 0; a usage error exits 2
            assert e.code == 0, f"{page.name}: {command}"
    if page.name in ("README.md", "cli.md"):
        assert len(commands) > 10  # the tour's block is read
