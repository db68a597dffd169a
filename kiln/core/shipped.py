"""The configs that come with kiln: the repository's `configs/` (one copy), installed by a wheel as the package data
`kiln/configs/`. `kiln train fashion_mnist` runs one by name; a file path always wins over a name."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from kiln.core.errors import KilnError

SUFFIXES = (".yaml", ".yml", ".json")


def configs_dir() -> Path | None:
    """Where the shipped configs are: the package data of an installed wheel, or the source checkout's configs/."""
    package = Path(__file__).resolve().parents[1]  # kiln/
    for folder in (package / "configs", package.parent / "configs"):
        if (folder / "fashion_mnist.yaml").is_file():
            return folder
    return None


def shipped() -> dict[str, Path]:
    """name -> file of every shipped config: `fashion_mnist`, `tune/fashion_mnist`, ..."""
    folder = configs_dir()
    if folder is None:
        return {}
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*.yaml"))}


def description(path: Path) -> str:
    """The first line of a config's leading comment."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def resolve(arg: Path | str) -> Path:
    """A config argument as a file: the path when it exists, else the shipped config of that name (with or without
    .yaml), else the path (its reader says it is missing — see `missing_hint`)."""
    path = Path(arg)
    if path.is_file():  # not a folder of that name (./fashion_mnist/ holding the data must not hide the config)
        return path
    name = path.as_posix().removeprefix("configs/")
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return shipped().get(name, path)


def missing_hint(arg: Path | str) -> str:
    """What to say when a config file is not found: the closest shipped name, and where the list is."""
    names = list(shipped())
    close = difflib.get_close_matches(Path(arg).stem, names, n=1, cutoff=0.6)
    hint = f" — did you mean the shipped config '{close[0]}'?" if close else ""
    return f"{hint} (`kiln configs` lists the shipped configs, runnable by name)"


def copy(name: str, dest: Path | None, force: bool = False) -> list[Path]:
    """Write shipped config `name` to `dest` (a file, or a folder; default: the current folder) as shipped, comments
    included, with the configs its `base:` chain names beside it — never anywhere else: a base in another folder
    (`tune/x.yaml` has `base: ../x.yaml`) is written next to the copy and the `base:` line names it there. An
    existing file is an error (nothing is written) unless `force`. The files written, in order."""
    source = shipped().get(name.removesuffix(".yaml"))
    if source is None:
        raise KilnError(f"no shipped config '{name}'{missing_hint(name)}")
    target = Path(dest) if dest is not None else Path(source.name)
    if target.is_dir():
        target = target / source.name
    chain = _copy_chain(source, target)
    existing = [str(t) for _, t in chain if t.exists()]
    if existing and not force:
        raise KilnError(f"kiln configs --copy never overwrites a file, and {', '.join(existing)} "
                        f"{'exists' if len(existing) == 1 else 'exist'}: choose another DEST, or add --force to replace "
                        f"{'it' if len(existing) == 1 else 'them'}")
    for i, (src, tgt) in enumerate(chain):
        text = src.read_text()
        if i + 1 < len(chain):  # the base now lies beside the copy, under the name it was given there
            text = re.sub(r"^(base:\s*)\S+", lambda m: m.group(1) + chain[i + 1][1].name, text, count=1, flags=re.M)
        tgt.parent.mkdir(parents=True, exist_ok=True)
        tgt.write_text(text)
    return [t for _, t in chain]


def _copy_chain(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """(shipped file, where its copy goes) for `source` and each config of its base: chain, every copy in
    `target`'s folder; a base whose name is taken by an earlier file of the chain is written as NAME_base.yaml."""
    import yaml

    chain = [(source, target)]
    while isinstance(base := (yaml.safe_load(source.read_text()) or {}).get("base"), str):
        source = (source.parent / base).resolve()
        target = target.parent / source.name
        while target in {t for _, t in chain}:
            target = target.with_name(f"{target.stem}_base{target.suffix}")
        chain.append((source, target))
    return chain
