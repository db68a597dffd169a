"""Training speed: kiln vs the textbook loop vs Lightning, same CNN, same data (a benchmark, not a test).

    python benchmarks/train_speed.py [--device cpu|cuda] [--epochs N] [--target 0.93]

Each method runs in its own child process (so peak RSS is its own) and evaluates on the test split after
every epoch, outside the timed region:
  kiln       kiln's fit() with the default config's data path, model, optimizer and schedule
  textbook   torchvision FashionMNIST + ToTensor/Normalize + DataLoader (batch 128, workers), Adam
  lightning  the textbook model and DataLoader under lightning.Trainer (when lightning is installed)
  bare       a bare loop over kiln's resident batches: kiln's step minus its bookkeeping
  overhead   kiln's epoch loop and the bare loop alternating in one process: the loop's per-step overhead
Prints a markdown table; paste it into benchmarks/RESULTS.md with the machine and versions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kiln.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fashion_mnist.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def kiln_parts(args, device, extra: tuple[str, ...] = ()):
    from kiln.config import load_config
    from kiln.core.state import seed_everything
    from kiln.data import DataRequest, build_data
    from kiln.models import build_model

    cfg = load_config(CONFIG, [f"trainer.epochs={args.epochs}", f"trainer.device={device}", *args.override, *extra])
    seed_everything(cfg.seed, cfg.trainer.deterministic)  # as kiln train does: cudnn.benchmark, TF32
    data = build_data(cfg.data, DataRequest(seed=cfg.seed, device=device, channels_last=True))
    data.val = data.test  # per-epoch accuracy on the test split, like the other methods
    model = build_model(cfg.model, data.info).to(device).to(memory_format=torch.channels_last)
    return cfg, data, model


def run_kiln(args, device, extra: tuple[str, ...] = ()) -> dict:
    from kiln.core.dist import ProcessInfo
    from kiln.train.build import Outputs, build_trainer
    from kiln.train.callbacks import LambdaCallback
    from kiln.train.loop import fit
    from kiln.train.plan import RunPlan

    cfg, data, model = kiln_parts(args, device, extra)
    epochs, accs = [], []

    def record(epoch, m):
        epochs.append(m["time/epoch_s"])
        accs.append(m["val/acc"])

    t = build_trainer(RunPlan.of(cfg, device, ProcessInfo()), data, model=model,
                      outputs=Outputs(callbacks=[LambdaCallback(on_epoch_end=record)]))
    fit(t)
    return {"epoch_s": epochs, "acc": accs, "images": data.sizes["train"], "batch": cfg.data.batch_size,
            "steps": len(data.train), "loader": data.loader, "precision": t.precision,
            "first_step_s": t.first_step_seconds}


@dataclass
class BareLoop:
    """kiln's step without its bookkeeping: forward, backward, optimizer and schedule step."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    device: torch.device
    precision: str
    label_smoothing: float

    def epoch(self, batches, epoch: int) -> None:
        from kiln.train.device import autocast

        self.model.train()
        for x, y in batches.epoch(epoch):
            with autocast(self.device, self.precision):
                loss = F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.after_step()


def run_bare(args, device) -> dict:
    """kiln's data path, model, optimizer and step, without the loop's bookkeeping. It evaluates between
    epochs (untimed) like kiln does, so both run under the same memory conditions."""
    from kiln.train.device import resolve_precision
    from kiln.train.loop import evaluate
    from kiln.train.optim import Schedule, build_optimizer

    cfg, data, model = kiln_parts(args, device)
    optimizer = build_optimizer(cfg.optim, model, device)
    schedule = Schedule(cfg.schedule, optimizer, epochs=args.epochs, steps_per_epoch=len(data.train))
    precision = resolve_precision(cfg.trainer.precision, device)
    bare = BareLoop(model, optimizer, schedule, device, precision, cfg.task.label_smoothing)
    epochs = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        bare.epoch(data.train, epoch)
        sync(device)
        epochs.append(time.perf_counter() - start)
        evaluate(model, data.val, build_task(cfg.task, 10), device=device, precision=precision)
    return {"epoch_s": epochs, "acc": [], "images": data.sizes["train"], "steps": len(data.train),
            "batch": cfg.data.batch_size, "precision": precision}


def run_overhead(args, device) -> dict:
    """kiln's train_epoch vs the bare loop in one process, alternating epochs (process effects cancel out)."""
    import copy

    from kiln.train.build import build_trainer
    from kiln.train.loop import train_epoch
    from kiln.train.optim import Schedule, build_optimizer

    epochs = 2 * args.epochs + 2  # a schedule long enough for both loops' epochs
    cfg, data, model = kiln_parts(args, device, (f"trainer.epochs={epochs}",))
    bare_model = copy.deepcopy(model)
    t = build_trainer(cfg, data, device, model=model)
    opt = build_optimizer(cfg.optim, bare_model, device)
    bare = BareLoop(bare_model, opt, Schedule(cfg.schedule, opt, epochs=epochs, steps_per_epoch=len(data.train)),
                    device, t.precision, cfg.task.label_smoothing)

    times = {"kiln": [], "bare": []}
    for epoch in range(args.epochs + 1):
        for name in (("kiln", "bare") if epoch % 2 else ("bare", "kiln")):
            start = time.perf_counter()
            if name == "kiln":
                t.state.batch = 0
                train_epoch(t, epoch)
            else:
                bare.epoch(data.train, epoch)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {"kiln": times["kiln"][1:], "bare": times["bare"][1:], "steps": len(data.train)}


def textbook_data(args, device):
    """The torchvision way: a Dataset of PIL images, ToTensor/Normalize per sample, a DataLoader."""
    import torchvision
    from torchvision import transforms

    from kiln.data.registry import get_dataset, locate

    raw = Path(args.tmp) / "FashionMNIST" / "raw"
    if not raw.exists():  # torchvision wants the uncompressed files in <root>/FashionMNIST/raw
        raw.mkdir(parents=True)
        src = locate(get_dataset("fashion_mnist"), None, False)
        for f in src.glob("*-ubyte.gz"):
            with gzip.open(f) as i, open(raw / f.name[:-3], "wb") as o:
                shutil.copyfileobj(i, o)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    workers = min(8, os.cpu_count() or 1)
    kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=True)
    train = torchvision.datasets.FashionMNIST(args.tmp, train=True, transform=tf)
    test = torchvision.datasets.FashionMNIST(args.tmp, train=False, transform=tf)
    return (torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, **kw),
            torch.utils.data.DataLoader(test, batch_size=512, **kw), len(train))


def textbook_model(device):
    from kiln.config import ModelConfig
    from kiln.data import DataInfo
    from kiln.models import build_model

    info = DataInfo("fashion_mnist", "image", 10, [str(i) for i in range(10)], in_channels=1, image_size=(28, 28))
    args = {"channels": [32, 64, 128], "dropout": 0.2}
    return build_model(ModelConfig(name="cnn", args=args), info).to(device)


@torch.no_grad()
def accuracy(model, loader, device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    model.train()
    return correct / total


def run_textbook(args, device) -> dict:
    train, test, n = textbook_data(args, device)
    model = textbook_model(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epochs, accs = [], []
    for _ in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # what textbook loops do to log the loss
        sync(device)
        epochs.append(time.perf_counter() - start)
        accs.append(accuracy(model, test, device))
    return {"epoch_s": epochs, "acc": accs, "images": n, "steps": len(train)}


def run_lightning(args, device) -> dict:
    import lightning as L

    train, test, n = textbook_data(args, device)
    epochs, accs = [], []

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = textbook_model(torch.device("cpu"))

        def training_step(self, batch, _):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("loss", loss, prog_bar=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class Timer(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync(device)
            epochs.append(time.perf_counter() - self.start)
            accs.append(accuracy(module.net, test, module.device))

    trainer = L.Trainer(max_epochs=args.epochs, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Timer()])
    trainer.fit(Module(), train)
    return {"epoch_s": epochs, "acc": accs, "images": n, "steps": len(train)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child(args) -> None:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"kiln": run_kiln, "kiln_fp32": lambda a, d: run_kiln(a, d, ("trainer.precision=32",)),
              "bare": run_bare, "textbook": run_textbook, "lightning": run_lightning,
              "overhead": run_overhead}[args.only](args, device)
    result["rss_mb"] = peak_rss_mb()
    result["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print("RESULT " + json.dumps(result))


def summarize(name: str, r: dict, target: float) -> dict:
    per_epoch = statistics.median(r["epoch_s"][1:] or r["epoch_s"])  # the first epoch includes warm-up
    reached = next((i for i, a in enumerate(r["acc"]) if a >= target), None)
    return {"method": name, "s_per_epoch": per_epoch, "images_s": r["images"] / per_epoch,
            "to_target": sum(r["epoch_s"][:reached + 1]) if reached is not None else None,
            "final_acc": r["acc"][-1] if r["acc"] else None, "rss_mb": r["rss_mb"], "cuda_mb": r["cuda_mb"],
            "step_ms": 1000 * per_epoch / r["steps"], "precision": r.get("precision", "32"),
            "batch": r.get("batch", 128), "first_step_s": r.get("first_step_s"), "epochs_s": r["epoch_s"],
            "accs": r["acc"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--target", type=float, default=0.93, help="test accuracy for the time-to-target column")
    p.add_argument("--methods", default="kiln,kiln_fp32,textbook,lightning,overhead",
                   help="comma-separated: kiln, kiln_fp32 (kiln in 32-bit, like the others), bare, textbook, "
                        "lightning, overhead")
    p.add_argument("--override", nargs="*", default=[], help="kiln config overrides, e.g. data.batch_size=512")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the methods round-robin this many times and keep each one's fastest run (noise)")
    p.add_argument("--json", metavar="PATH", help="also write the rows (and the overhead run) to this JSON file")
    p.add_argument("--only", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        return child(args)

    rows: dict[str, dict] = {}
    overhead = None
    with tempfile.TemporaryDirectory() as tmp:
        for method in [m for _ in range(args.repeat) for m in args.methods.split(",")]:
            if method == "lightning" and not _has("lightning"):
                print("lightning not installed (pip install -e .[bench]): skipped", file=sys.stderr)
                continue
            cmd = [sys.executable, __file__, "--only", method, "--tmp", tmp, "--device", args.device,
                   "--epochs", str(args.epochs), "--override", *args.override]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            line = next((row for row in out.stdout.splitlines() if row.startswith("RESULT ")), None)
            if line is None:
                print(f"{method} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                continue
            if method == "overhead":
                overhead = json.loads(line[7:])
                continue
            row = summarize(method, json.loads(line[7:]), args.target)
            if method not in rows or row["s_per_epoch"] < rows[method]["s_per_epoch"]:
                rows[method] = row
            print(f"{method}: {row['s_per_epoch']:.2f} s/epoch", file=sys.stderr)
    report(rows, args, overhead)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "overhead": overhead}, indent=1))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _fmt(value, spec: str, missing: str = "—") -> str:
    return spec.format(value) if value is not None else missing


def report(rows: dict, args, overhead: dict | None = None) -> None:
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or 'CPU'}" \
        f" ({os.cpu_count()} cores)"
    print(f"\n{device} | torch {torch.__version__} | python {platform.python_version()} | {args.epochs} epochs"
          f" | best of {args.repeat}")
    print(f"| method | precision | batch | s/epoch (median) | images/s | step ms | time to {args.target:.0%} | final test acc | "
          "peak RSS MiB | CUDA max alloc MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows.values():
        cells = [r["method"], r["precision"], str(r["batch"]), f"{r['s_per_epoch']:.2f}", f"{r['images_s']:,.0f}",
                 f"{r['step_ms']:.2f}",
                 _fmt(r["to_target"], "{:.1f} s", "not reached"), _fmt(r["final_acc"], "{:.4f}"),
                 f"{r['rss_mb']:,.0f}", _fmt(r["cuda_mb"], "{:,.0f}")]
        print("| " + " | ".join(cells) + " |")
    for mine in ("kiln", "kiln_fp32"):
        for other in ("textbook", "lightning"):
            if mine in rows and other in rows:
                print(f"{mine} vs {other}: {rows[other]['s_per_epoch'] / rows[mine]['s_per_epoch']:.2f}x "
                      "faster per epoch")
    if overhead:
        kiln_s, bare_s = statistics.median(overhead["kiln"]), statistics.median(overhead["bare"])
        print(f"kiln's loop vs a bare loop over the same batches, one process, alternating epochs: "
              f"{1000 * kiln_s / overhead['steps']:.2f} vs {1000 * bare_s / overhead['steps']:.2f} ms/step "
              f"({kiln_s / bare_s - 1:+.1%})")


if __name__ == "__main__":
    main()
