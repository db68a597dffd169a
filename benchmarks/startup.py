"""How long kiln takes to answer: `kiln --help`, a config mistake reported by `kiln train` (a wrong key, a wrong
model name, a wrong model argument, a wrong device), the same mistake through `kiln config`, and `kiln predict RUN
image.png` end to end. Each command runs in a fresh process (what a user waits for), `--repeat` times; the table
shows the median and the fastest.

    python benchmarks/startup.py [--repeat 5]

Goals (issue 27): --help < 0.3 s, a config mistake < 1 s, predict on one image < 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "fashion_mnist.yaml")


def timed(args: list[str], expect: int, cwd: Path) -> float:
    """Seconds for `kiln ARGS` (or `python ARGS` when they start with -c) in a new process."""
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "kiln", *args]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != expect:
        raise SystemExit(f"kiln {' '.join(args)}: exit {result.returncode}, expected {expect}\n{result.stderr}")
    return elapsed


def tiny_run(folder: Path) -> tuple[Path, Path]:
    """A small image-folder run trained for one epoch, and one image to predict."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = folder / "photos"
    for c, colour in enumerate([(220, 40, 40), (40, 40, 220)]):
        (photos / f"class{c}").mkdir(parents=True)
        for i in range(32):
            pixels = np.clip(rng.normal(colour, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(photos / f"class{c}" / f"{i}.png")
    subprocess.run([sys.executable, "-m", "kiln", "train", str(ROOT / "configs" / "image_folder.yaml"),
                    f"data.root={photos}", f"log.dir={folder / 'runs'}", "trainer.epochs=1", "data.image_size=32",
                    "log.progress=none", "-q"], check=True, cwd=folder, capture_output=True)
    run = next(p for p in (folder / "runs").glob("*/*") if p.is_dir())
    return run, photos / "class0" / "0.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run, image = tiny_run(folder)
        cases = [
            ("kiln --help", ["--help"], 0, 0.3),
            ("kiln train: unknown key (trainer.epoch=2)", ["train", DEFAULT, "trainer.epoch=2"], 2, 1.0),
            ("kiln train: unknown model (model.name=resnet19)", ["train", DEFAULT, "model.name=resnet19"], 2, 1.0),
            ("kiln train: model argument (model.args.chanels=8)", ["train", DEFAULT, "model.args.chanels=8"], 2, 1.0),
            ("kiln train: device (trainer.device=gpu)", ["train", DEFAULT, "trainer.device=gpu"], 2, 1.0),
            ("kiln config: unknown key", ["config", DEFAULT, "trainer.epoch=2"], 2, 1.0),
            ("kiln predict RUN image.png", ["predict", str(run), str(image)], 0, 3.0),
            ("python -c 'import torch' (the floor of any command that runs a model)", ["-c", "import torch"], 0, 0),
        ]
        print("| command | median s | fastest s | goal s |")
        print("|---|---|---|---|")
        for label, argv, expect, goal in cases:
            times = [timed(argv, expect, folder) for _ in range(args.repeat)]
            target = f"< {goal:g}" if goal else "—"
            print(f"| `{label}` | {statistics.median(times):.2f} | {min(times):.2f} | {target} |", flush=True)


if __name__ == "__main__":
    main()
