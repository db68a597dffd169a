"""SIGKILL a training run at random moments, resume it after each kill (the resumed process is killed again at the
next moment), and check that the run ends bit-identical to an uninterrupted one: every weight and optimizer
tensor, the loop counters, every logged metric and the test metrics. A reliability figure for the README.

    python benchmarks/kill_resume.py [--kills 20] [--seed 0] [--train 12000] [--epochs 6] [--source idx|shards]

Kill moments are drawn uniformly over each attempt's expected life, so they land before the first checkpoint,
mid-epoch, during checkpoint writes, and during the final test; where each landed is read off the run folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ("time/", "mem/")  # differ between any two runs


def config(folder: Path, data: Path | dict, epochs: int) -> Path:
    """`data`: the IDX folder, or a data section (the tar shards of `shards()`)."""
    source = data if isinstance(data, dict) else {"name": "fashion_mnist", "root": str(data)}
    raw = {"name": "kill", "seed": 5,
           "data": {**source, "batch_size": 64, "val_split": 0.1, "augment": {"crop_padding": 2, "hflip": True}},
           "model": {"name": "cnn", "args": {"channels": [16, 32], "dropout": 0.1}},
           "optim": {"name": "sgd", "lr": 0.05, "nesterov": True},
           "schedule": {"name": "onecycle"}, "task": {"label_smoothing": 0.1},
           "trainer": {"epochs": epochs, "checkpoint": {"keep_top_k": 2}},
           "log": {"dir": str(folder / "runs"), "progress": "none"}}
    path = folder / "kill.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def kiln(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.Popen([sys.executable, "-m", "kiln", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def where(run: Path) -> str:
    """Where a kill landed, read off the run folder it left."""
    from kiln.core.state import load_checkpoint
    from kiln.runs import RunDir

    folder = RunDir(run)
    if not folder.config_file.is_file():
        return "during start-up (no run folder yet)"
    if list(folder.checkpoints.glob(".*.tmp")):
        return "during a checkpoint write"
    if not folder.has_last():
        return "in the first epoch (no checkpoint yet)"
    loop = load_checkpoint(folder.last)["loop"]
    if loop["finished"]:
        return "after the last epoch, before or during the final test"
    return "mid-epoch (after a checkpoint)"


def shards(work: Path, train: int) -> dict:
    """Generated colour images packed into WebDataset shards (kiln data pack), read per batch straight from them."""
    from fakedata import write_image_folder
    from kiln.commands.pack import pack

    packed = pack(write_image_folder(work / "images", n=train, layout="splits", extras=False), work / "shards",
                  shard_size="64KB")
    return {"name": "webdataset", "urls": packed.urls(), "image_size": 24, "cache": "off", "shuffle_buffer": 64}


def chain(work: Path, *, kills: int, seed: int, train: int, epochs: int, source: str = "idx") -> dict:
    from fakedata import write_idx_dataset

    data = shards(work, train) if source == "shards" else \
        write_idx_dataset(work / "idx", n_train=train, n_test=max(200, train // 5))
    cfg = config(work, data, epochs)
    began = time.perf_counter()
    ref = kiln("train", str(cfg), "--run-dir", str(work / "ref"))
    while ref.poll() is None and not (work / "ref" / "config.yaml").is_file():
        time.sleep(0.02)
    startup = time.perf_counter() - began  # the torch import and data loading, until the run folder exists
    if ref.wait() != 0:
        raise RuntimeError(f"the reference run failed: {ref.stderr.read()[-2000:]}")
    life = time.perf_counter() - began  # seconds from start to finish, startup and test included
    rng = random.Random(seed)
    landed: Counter = Counter()
    attempts = chains = 0
    identical_runs = True
    while sum(landed.values()) < kills:  # chains of kills until enough have landed
        chains += 1
        run = work / f"cut-{chains}"
        while sum(landed.values()) < kills and not finished(run):
            proc = start(run, cfg)
            attempts += 1
            # A kill somewhere in what is left of the run (start-up, the remaining epochs, checkpoint writes,
            # the test), stratified: kill k lands in quarter k % 4 of that time, so kills spread over the run.
            left = startup + (life - startup) * (epochs - epochs_done(run)) / epochs
            delay = left * ((sum(landed.values()) % 4) + rng.random()) / 4
            try:
                proc.wait(timeout=delay)
                continue  # finished before this kill
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            landed["during start-up (imports, data loading)" if delay < startup else where(run)] += 1
        while not finished(run):  # resume, unkilled, until the run is complete
            proc = start(run, cfg)
            attempts += 1
            if proc.wait() != 0 or attempts > 3 * kills + 10:
                raise RuntimeError(f"the killed run did not finish: {proc.stderr.read()[-2000:]}")
        identical_runs &= identical(work / "ref", run)
    return {"kills": sum(landed.values()), "landed": dict(landed), "attempts": attempts, "chains": chains,
            "identical": identical_runs, "reference_seconds": round(life, 1), "startup_seconds": round(startup, 1)}


def start(run: Path, cfg: Path) -> subprocess.Popen:
    """The first attempt of a run starts it; later ones resume it (a kill during start-up may leave no folder)."""
    if (run / "config.yaml").is_file():
        return kiln("train", "--resume", str(run))
    return kiln("train", str(cfg), "--run-dir", str(run))


def epochs_done(run: Path) -> int:
    from kiln.core.state import load_checkpoint
    from kiln.runs import RunDir

    folder = RunDir(run)
    try:
        return load_checkpoint(folder.last)["loop"]["epoch"] if folder.has_last() else 0
    except Exception:  # noqa: BLE001 — a checkpoint a kill damaged counts as none (resume falls back)
        return 0


def finished(run: Path) -> bool:
    from kiln.runs import RunDir

    folder = RunDir(run)
    return folder.config_file.is_file() and folder.status().get("state") == "finished" \
        and folder.test_metrics() is not None


def identical(a: Path, b: Path) -> bool:
    from kiln.core.state import load_checkpoint
    from kiln.runs import RunDir

    ra, rb = RunDir(a), RunDir(b)
    sa, sb = load_checkpoint(ra.last), load_checkpoint(rb.last)
    same = all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    same &= oa.keys() == ob.keys() and all(torch.equal(oa[p][k], ob[p][k]) for p in oa for k in oa[p])
    same &= sa["loop"] == sb["loop"] and torch.equal(sa["running"]["sums"], sb["running"]["sums"])

    def rows(run: RunDir) -> list[dict]:
        lines = run.metrics_jsonl.read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if not k.startswith(MEASURED)} for x in lines]

    same &= rows(ra) == rows(rb)
    ta, tb = ra.test_metrics() or {}, rb.test_metrics() or {}
    return bool(same and ta.get("acc") == tb.get("acc") and ta.get("loss") == tb.get("loss"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=12000, help="generated training images")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--source", choices=["idx", "shards"], default="idx",
                   help="the data: IDX files held in memory, or WebDataset shards read per batch")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = chain(Path(tmp), kills=args.kills, seed=args.seed, train=args.train, epochs=args.epochs,
                       source=args.source)
    print(json.dumps(result, indent=1))
    where_landed = ", ".join(f"{v} {k}" for k, v in result["landed"].items())
    print(f"{result['kills']} SIGKILLs over {result['chains']} chained run(s) ({where_landed}); "
          f"each ends bit-identical to the uninterrupted run: {result['identical']}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    main()
