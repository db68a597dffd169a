from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fakedata import write_idx_dataset
from kiln.config import deep_merge

ROOT = Path(__file__).resolve().parents[1]
REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def pytest_collection_modifyitems(items):
    """Files with the most slow tests first (stable: each file keeps its order). Under `make test` (pytest -n 2 --dist
    loadfile) the long files then start at once, instead of leaving one worker alone with them at the end."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.fixture(scope="session")
def idx_root(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("fashion_mnist"))


def tiny_config(tmp_path: Path, idx_root: Path, **sections) -> dict:
    """A config that trains in about a second on the generated data."""
    cfg = {
        "name": "tiny",
        "seed": 3,
        "data": {"name": "fashion_mnist", "root": str(idx_root), "batch_size": 32, "val_split": 96,
                 "augment": {"crop_padding": 2, "hflip": True}},
        "model": {"name": "cnn", "args": {"channels": [8, 16], "dropout": 0.1}},
        "optim": {"name": "sgd", "lr": 0.05, "nesterov": True, "weight_decay": 1e-4},
        "schedule": {"name": "onecycle"},
        "trainer": {"epochs": 2, "log_every_n_steps": 3},
        "log": {"dir": str(tmp_path / "runs"), "progress": "none"},
    }
    return deep_merge(cfg, sections)  # kiln's own merge: switching model.name drops the old args


def write_config(tmp_path: Path, cfg: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """$KILN_CACHE in the test's own folder: decoded images and tokens are not shared with other tests."""
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def config_file(tmp_path, idx_root) -> Path:
    return write_config(tmp_path, tiny_config(tmp_path, idx_root))


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """`cli("train", path, ...)`: `kiln ...` in this process, as main() answers it (exit code, stdout, stderr),
    where a subprocess would add nothing but seconds of imports. run_cli runs the real entry point instead."""
    from kiln.cli import main

    def run(*args) -> Ran:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 240, env: dict | None = None):
    """Run the real `kiln` console entry point in a subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})}
    return subprocess.run([sys.executable, "-m", "kiln", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def only_run(runs: Path) -> Path:
    found = [p for p in runs.glob("*/*") if p.is_dir()]
    assert len(found) == 1, found
    return found[0]
