"""Why the test suite gives each pytest-xdist worker its share of the cores (tests/conftest.py): two processes
training at once, each with torch's default of one intra-op thread per core, against each with cores / 2 threads.
The run is the colour-folder test's (tests/test_images.py: 600 generated images, 32 px, a 3-stage CNN), 12
epochs, after a 1-epoch warm-up in the same process (imports and the decode cache are not timed).

    python benchmarks/worker_threads.py [--processes 2] [--epochs 12]

Prints the seconds each process took to train, for each thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAIN = """
import json, sys, time, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from fakedata import write_image_folder
from test_images import _config
from kiln.config import build_config
from kiln.train import session

torch.set_num_threads({threads})
work = Path({work!r})
root = write_image_folder(work / "shapes", n=600)
warm = _config(work / "warm", root)
warm["trainer"]["epochs"] = 1
session.train(build_config(warm), quiet=True)
raw = _config(work / "timed", root)
raw["trainer"]["epochs"] = {epochs}
start = time.perf_counter()
session.train(build_config(raw), quiet=True)
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def together(processes: int, threads: int, epochs: int) -> list[float]:
    """Seconds each of `processes` concurrent trainings took at `threads` torch threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(processes):
            work = Path(tmp) / str(i)
            code = TRAIN.format(tests=str(ROOT / "tests"), threads=threads, work=str(work), epochs=epochs)
            env = {**os.environ, "KILN_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT)}
            procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env))
        return [json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"] for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{args.processes} processes at once on {cores} cores, {args.epochs} epochs each")
    for threads in sorted({cores, max(1, cores // args.processes)}, reverse=True):
        seconds = together(args.processes, threads, args.epochs)
        print(f"  {threads} thread(s) each: " + ", ".join(f"{s:.2f} s" for s in seconds))


if __name__ == "__main__":
    main()
