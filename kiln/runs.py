"""Run folders: runs/<name>/<YYYYmmdd-HHMMSS>/, their status, and finding one to resume."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kiln.errors import KilnError

STATUS = "status.json"


def new_run_dir(log_dir: Path, name: str, prefix: str = "") -> Path:
    """<log_dir>/<name>/<prefix><YYYYmmdd-HHMMSS>, made now (with a -N suffix if that second is taken)."""
    base = Path(log_dir) / name / (prefix + time.strftime("%Y%m%d-%H%M%S"))
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # two runs started in the same second
            path, n = base.with_name(f"{base.name}-{n}"), n + 1


def write_status(run_dir: Path, state: str, **extra: Any) -> None:
    """state: running | interrupted | stopped | failed | finished."""
    info = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    tmp = Path(run_dir) / f".{STATUS}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(Path(run_dir) / STATUS)


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def check_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise KilnError(f"{run_dir} is not a kiln run folder (no config.yaml); "
                        "pass a folder like runs/<name>/<YYYYmmdd-HHMMSS>")
    return run_dir


def find_resumable(log_dir: Path, name: str) -> Path:
    """The newest run of `name` that has a last.pt and did not finish."""
    folder = Path(log_dir) / name
    candidates = sorted((p for p in folder.glob("*") if (p / "checkpoints" / "last.pt").is_file()),
                        key=lambda p: p.name, reverse=True)
    for run in candidates:
        if read_status(run).get("state") != "finished":
            return run
    raise KilnError(f"--resume auto found no unfinished run of '{name}' with a checkpoint under {folder}; "
                    "start a new run without --resume, or pass --resume RUN_DIR")


def resolve_checkpoint(run_dir: Path, which: str) -> Path:
    """best | last | a path; best falls back to last when the run never validated."""
    if which in ("best", "last"):
        path = Path(run_dir) / "checkpoints" / f"{which}.pt"
        if which == "best" and not path.is_file():
            path = Path(run_dir) / "checkpoints" / "last.pt"
        if not path.is_file():
            raise KilnError(f"{run_dir} has no checkpoints/{which}.pt — did its training start?")
        return path
    path = Path(which)
    if not path.is_file():
        raise KilnError(f"checkpoint not found: {path}")
    return path
