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


def test_the_site_builds_strictly_and_works_in_a_browser(tmp_path):
    pytest.importorskip("mkdocs", reason="make test installs mkdocs (the dev extra)")
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    api = (site / "python" / "index.html").read_text()
    assert "kiln.api.train" in api and "as_frame" in api  # the reference is generated from the docstrings
    _browse(site, tmp_path)


def _browse(site: Path, tmp_path: Path) -> None:
    """The built site served on 127.0.0.1 as a reader opens it: every page of the navigation loads without console
    errors, and the search finds a page by a word of it."""
    import functools
    import http.server
    import threading

    from conftest import headless_browser

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no line per request in the test's output
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    browser = headless_browser(tmp_path / "profile", height=1000)
    try:
        browser.get(base)
        assert browser.title.startswith("kiln")
        links = browser.execute_script("return Array.from(document.querySelectorAll('nav a.md-nav__link'))"
                                       ".map(a => a.href).filter(h => h.startsWith(location.origin));")
        pages = sorted(set(links))
        assert len(pages) >= len(list((ROOT / "docs").glob("*.md"))) - 1
        for page in pages:
            browser.get(page)
            assert browser.find_element("css selector", "article h1").text, page
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        for query, page in (("CutMix", "competition"), ("mix_switch_prob", "reference")):  # a config key too
            browser.get(base + f"?q={query}")  # Material's search reads the query from the address
            hits = browser.execute_script(
                "return new Promise(done => setTimeout(() => done(Array.from(document.querySelectorAll("
                "'.md-search-result__link')).map(a => a.href)), 3000));")
            assert any(page in h for h in hits), (query, hits)
    finally:
        browser.quit()
        server.shutdown()


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


def python_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, the reason it is not run — None when it is) of each ```python block of a page. A block is marked
    not run by an HTML comment on the line before it: <!-- not run: REASON -->."""
    lines, out = page.read_text().splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            mark = re.fullmatch(r"<!-- not run: (.+) -->", lines[i - 1].strip()) if i else None
            out.append((i + 1, "\n".join(lines[i + 1:end]), mark[1] if mark else None))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_runs_or_says_why_not(page, tmp_path, monkeypatch):
    """Every block is valid Python; one not marked `<!-- not run: REASON -->` runs, in a fresh folder, as shown."""
    monkeypatch.chdir(tmp_path)
    for line, code, reason in python_blocks(page):
        compile(code, f"{page.name}:{line}", "exec")
        if reason is None:
            exec(compile(code, f"{page.name}:{line}", "exec"), {"__name__": "__docs__"})
        else:
            assert len(reason.split()) >= 4, f"{page.name}:{line}: say why the block is not run"
