"""Input throughput of an image folder: kiln (decode once, then per-image RandomResizedCrop + flip on whole batches)
against the textbook torchvision.datasets.ImageFolder + transforms + DataLoader (PIL decode, RandomResizedCrop,
flip, ToTensor, Normalize per sample, every epoch).

Same images, same output size, same augmentation, same batch size; the textbook loader uses --workers processes
(kiln on a CPU serves its decoded store from memory in the main process: no workers). Each loader runs in its own
process so peak RSS is its own. Only the input pipeline is timed (no model): images/s delivered as normalised
float batches.

    python benchmarks/image_folder.py [--epochs 3] [--workers 2] [--json]

Datasets (generated once into $KILN_BENCH_DATA, default /tmp/kiln-bench-images):
  small: 10,000 colour PNGs, 32-48 px, output 32 px
  jpeg:  2,000 colour JPEGs of mixed sizes 300-500 px, output 128 px
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

DATASETS = {"small": dict(n=10_000, sizes=(32, 49), size=32, fmt="png"),
            "jpeg": dict(n=2_000, sizes=(300, 501), size=128, fmt="jpg")}


def make(name: str, root: Path) -> Path:
    import numpy as np

    from fakedata import SHAPE_CLASSES, draw_shape_image

    spec = DATASETS[name]
    folder = root / name
    if (folder / ".done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(spec["n"]):
        label = i % len(SHAPE_CLASSES)
        (folder / SHAPE_CLASSES[label]).mkdir(parents=True, exist_ok=True)
        size = (int(rng.integers(*spec["sizes"])), int(rng.integers(*spec["sizes"])))
        img = draw_shape_image(label, rng, size)
        path = folder / SHAPE_CLASSES[label] / f"{i:05d}.{spec['fmt']}"
        img.save(path, quality=90) if spec["fmt"] == "jpg" else img.save(path)
    (folder / ".done").touch()
    return folder


def run_textbook(folder: Path, size: int, epochs: int, workers: int, batch: int) -> list[float]:
    import torch
    import torchvision.datasets as tvd
    from torchvision import transforms as T

    tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])])
    ds = tvd.ImageFolder(str(folder), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, drop_last=True)
    rates = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for x, _ in loader:
            seen += len(x)
        rates.append(seen / (time.perf_counter() - start))
    return rates


def run_kiln(folder: Path, size: int, epochs: int, batch: int, cache: Path) -> list[float]:
    import torch

    from kiln.config import DataConfig
    from kiln.data import DataRequest, build_data

    shutil.rmtree(cache, ignore_errors=True)  # the first epoch pays for decoding every image once
    os.environ["KILN_CACHE"] = str(cache)
    start = time.perf_counter()
    cfg = DataConfig(name="image_folder", root=folder, image_size=size, batch_size=batch, val_split=0,
                     channels=3, mean=[0.5], std=[0.25])
    train = build_data(cfg, DataRequest(seed=0, device=torch.device("cpu"), splits=("train",))).require("train")
    rates = []
    for epoch in range(epochs):
        seen = 0
        for x, _ in train.epoch(epoch):
            seen += len(x)
        rates.append(seen / (time.perf_counter() - start))
        start = time.perf_counter()
    return rates


def child(args) -> None:
    folder = make(args.dataset, Path(args.data))
    size = DATASETS[args.dataset]["size"]
    if args.loader == "textbook":
        rates = run_textbook(folder, size, args.epochs, args.workers, args.batch)
    else:
        rates = run_kiln(folder, size, args.epochs, args.batch, Path(args.data) / "cache")
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"rates": rates, "peak_rss_mib": rss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the textbook loader")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--data", default=os.environ.get("KILN_BENCH_DATA", "/tmp/kiln-bench-images"))
    p.add_argument("--datasets", default="small,jpeg")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("DATASET", "LOADER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.dataset, args.loader = args.child
        return child(args)
    results = {}
    for dataset in args.datasets.split(","):
        make(dataset, Path(args.data))
        for loader in ("textbook", "kiln"):
            cmd = [sys.executable, __file__, "--child", dataset, loader, "--epochs", str(args.epochs),
                   "--workers", str(args.workers), "--batch", str(args.batch), "--data", args.data]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[(dataset, loader)] = json.loads(out.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps({f"{d}/{lo}": r for (d, lo), r in results.items()}, indent=1))
        return
    print("| dataset | loader | epoch 1 img/s | later epochs img/s | peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    for (dataset, loader), r in results.items():
        later = sum(r["rates"][1:]) / max(1, len(r["rates"]) - 1)
        print(f"| {dataset} | {loader} | {r['rates'][0]:,.0f} | {later:,.0f} | {r['peak_rss_mib']:,.0f} |")
    for dataset in args.datasets.split(","):
        t, k = results[(dataset, "textbook")]["rates"], results[(dataset, "kiln")]["rates"]
        print(f"{dataset}: later epochs {sum(k[1:]) / sum(t[1:]):.1f}x the textbook loader; first epoch takes "
              f"{t[0] / k[0]:.2f}x its time")


if __name__ == "__main__":
    main()
