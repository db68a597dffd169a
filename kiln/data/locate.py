"""Where a registered dataset's files are: `locate` looks in the documented order (data.root; else $KILN_DATA/<name>,
./data/<name> and the dataset's system folders) and downloads only when asked to."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kiln.core.errors import KilnError


def candidate_dirs(spec: Any, root: Path | None) -> list[Path]:
    """Where the files may be, in the documented search order."""
    if root is not None:
        return [Path(root).absolute()]
    dirs = []
    if os.environ.get("KILN_DATA"):
        dirs.append(Path(os.environ["KILN_DATA"]) / spec.name)
    dirs.append(Path("data") / spec.name)
    dirs.extend(Path(d) for d in getattr(spec, "system_dirs", ()))
    return [d.absolute() for d in dirs]


def locate(spec: Any, root: Path | None, download: bool) -> Path:
    """The folder holding the dataset's files, downloading them only when asked to."""
    tried = candidate_dirs(spec, root)
    for folder in tried:
        found = spec.find(folder)
        if found is not None:
            return found
    if download:
        folder = Path(root) if root is not None else Path("data") / spec.name
        try:
            spec.download(folder)
        except (OSError, RuntimeError, ValueError) as e:
            raise KilnError(f"downloading '{spec.name}' into {folder} failed: {e}") from None
        found = spec.find(folder)
        if found is None:
            raise KilnError(f"downloaded '{spec.name}' into {folder} but did not find its files there")
        return found
    looked = "\n  ".join(str(d) for d in tried)
    hint = "`make data` (installs the Debian package dataset-fashion-mnist), " if spec.name == "fashion_mnist" else ""
    raise KilnError(f"dataset '{spec.name}' not found. Looked for {spec.describe_files()} in:\n  {looked}\n"
                    f"Get it with {hint}set data.root=FOLDER, or let kiln download it with data.download=true")
