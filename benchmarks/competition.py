"""The competition guide's figures (docs/competition.md), measured on real images: Fashion-MNIST as a competition.

A labelled training folder (train/<class>/*.png, a seeded subset of the training images), an unlabelled test folder
(test/*.png, a seeded subset of the test images) with its hidden answer key, the competition's sample submission,
and a style-shifted copy of the test folder (inverted: light garments on black). Every step is the kiln command the
guide shows; each one's wall time and score are printed as a table (and --json).

    python benchmarks/competition.py [--train 3000] [--test 2000] [--workdir /tmp/kiln-competition] [--json]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

FASHION = Path(os.environ.get("KILN_FASHION", "/usr/share/datasets/fashion-mnist"))
NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def _idx(name: str) -> np.ndarray:
    with gzip.open(FASHION / name) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def make(root: Path, n_train: int, n_test: int) -> Path:
    """The competition's files under `root` (written once)."""
    if (root / "answers.csv").is_file():
        return root
    rng = np.random.default_rng(0)
    images, labels = _idx("train-images-idx3-ubyte.gz"), _idx("train-labels-idx1-ubyte.gz")
    for i in rng.choice(len(labels), n_train, replace=False):
        folder = root / "train" / NAMES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"train_{i:05d}.png")
    images, labels = _idx("t10k-images-idx3-ubyte.gz"), _idx("t10k-labels-idx1-ubyte.gz")
    chosen = rng.choice(len(labels), n_test, replace=False)
    for folder in ("test", "test_inverted"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    answers, sample = [["id", "label"]], [["id", "label"]]
    for i in chosen:
        image = Image.fromarray(images[i])
        image.save(root / "test" / f"{i:05d}.png")
        ImageOps.invert(image).save(root / "test_inverted" / f"{i:05d}.png")
        answers.append([f"{i:05d}", NAMES[labels[i]]])
        sample.append([f"{i:05d}", NAMES[0]])
    for name, rows in (("answers.csv", answers), ("sample_submission.csv", sample)):
        with (root / name).open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def kiln(*args: str, cwd: Path) -> tuple[str, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kiln", *args, "-q"], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kiln {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout, time.perf_counter() - start


def submission_accuracy(submission: Path, answers: Path) -> float:
    truth = {r["id"]: r["label"] for r in csv.DictReader(answers.open())}
    rows = list(csv.DictReader(submission.open()))
    return sum(truth[r["id"]] == r["label"] for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kiln-competition"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = make(args.workdir, args.train, args.test)
    configs = Path(__file__).resolve().parents[1] / "configs"
    common = ["data.root=train", "data.image_size=28", "data.test_split=0", "data.val_split=0.1",
              "data.augment.hflip=true"]
    rows = []

    def row(step: str, seconds: float, **scores: float) -> None:
        rows.append({"step": step, "seconds": round(seconds, 1), **{k: round(v, 4) for k, v in scores.items()}})
        print(json.dumps(rows[-1]), flush=True)

    out, s = kiln("baseline", str(configs / "image_folder.yaml"), *common, "--json", cwd=root)
    baseline = json.loads(out)
    row("linear baseline (kiln baseline)", s, val_acc=float(baseline.get("scores", baseline)["acc"]))
    recipes = {"plain": [], "mixed": ["data.augment.mixup=0.2", "data.augment.cutmix=1.0", "data.augment.mix_prob=0.5",
                                      "data.augment.mix_off_epoch=25"]}
    for name, extra in recipes.items():
        _, s = kiln("train", str(configs / "image_folder.yaml"), *common, *extra, "--run-dir", f"runs/{name}", cwd=root)
        val = max(json.loads(line).get("val/acc", 0) for line in (root / "runs" / name / "metrics.jsonl").open())
        kiln("predict", f"runs/{name}", "test", "--submission", "sample_submission.csv", "--labels", "name", "--out",
             f"{name}.csv", cwd=root)
        row(f"kiln train ({name})", s, val_acc=val,
            test_acc=submission_accuracy(root / f"{name}.csv", root / "answers.csv"))
        _, s = kiln("predict", f"runs/{name}", "test", "--tta", "hflip", "--submission", "sample_submission.csv",
                    "--labels", "name", "--out", f"{name}-tta.csv", cwd=root)
        row(f"  + --tta hflip ({name})", s, test_acc=submission_accuracy(root / f"{name}-tta.csv", root / "answers.csv"))
    _, s = kiln("cv", str(configs / "image_folder.yaml"), *common, *recipes["mixed"], "--folds", "3",
                "log.dir=runs/cv", cwd=root)
    cv = next((root / "runs" / "cv").glob("*/cv-*"))
    _, s2 = kiln("predict", str(cv), "test", "--tta", "hflip", "--submission", "sample_submission.csv", "--labels",
                 "name", "--out", "cv.csv", cwd=root)
    row("kiln cv --folds 3 (mixed), ensemble + TTA", s + s2,
        test_acc=submission_accuracy(root / "cv.csv", root / "answers.csv"))
    for folder in ("test", "test_inverted"):
        out, s = kiln("shift", "runs/mixed", folder, cwd=root)
        row(f"kiln shift runs/mixed {folder}", s, auc=float(out.split()[2]))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
