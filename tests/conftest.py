from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Each pytest-xdist worker trains on its share of the cores (make test runs one worker per core), as kiln tune's
# workers do: two workers each running torch's default of one thread per core oversubscribe the machine, and a
# small model then trains 3x slower (2.3 s against 7.0 s for the same run, two at once on the 2-core CI machine).
# Set before torch is imported; the kiln processes a test starts inherit it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from fakedata import write_idx_dataset  # noqa: E402
from kiln.config import deep_merge  # noqa: E402

if "OMP_NUM_THREADS" in os.environ:  # torch may have been imported first (by a plugin)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
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


def assert_resumes_bit_exact(config_for, stop_at: int) -> None:
    """`config_for(folder)` trained straight through, and again stopped at optimizer step `stop_at` (mid-epoch)
    and resumed: both end with identical weights (last.pt)."""
    import torch

    from kiln.core.errors import TrainingInterrupted
    from kiln.core.state import load_checkpoint
    from kiln.train import session
    from kiln.train.callbacks import LambdaCallback

    full = session.train(config_for("full"), quiet=True)

    def stop(t):
        if t.state.step == stop_at:
            t.stop_requested = True

    with pytest.raises(TrainingInterrupted):
        session.train(config_for("cut"), quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    cut = config_for("cut")
    resumed = session.train(cut, resume=next(Path(cut.log.dir).glob("*/*")), quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def chrome_paths() -> tuple[str | None, str | None]:
    """Headless Chromium and its driver (make test installs Debian's chromium and chromium-driver)."""
    import shutil

    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    return chrome, shutil.which("chromedriver")


def headless_browser(profile: Path, width: int = 1200, height: int = 2000):
    """A headless Chromium through selenium, logging the page's console (skips when either is missing)."""
    pytest.importorskip("selenium", reason="selenium is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver = chrome_paths()
    if not (chrome and driver):
        pytest.skip("headless Chromium and chromedriver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)
