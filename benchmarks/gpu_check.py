"""The GPU acceptance run: every GPU path of kiln in one command (run it through gpu_check.sh).

    benchmarks/gpu_check.sh OUT_DIR [--cpu-dry-run]

Each check runs kiln as a user would (the CLI on the real Fashion-MNIST files and on generated text) and is
written to OUT_DIR/results.md and OUT_DIR/results.json the moment it ends — PASS / FAIL / SKIP, seconds, a
detail — so a run that fails or is cut short still leaves its table. The functional checks run a few at a
time (they are short, and one GPU has room for several); the timed ones (speed benchmark, presets, the best
config) run alone afterwards.

--cpu-dry-run: every step with trainer.fast_dev_run on tiny generated data, in this one process, with the
CUDA-only checks reported as SKIP: the plumbing, tested on a machine without a GPU (part of `make test`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/fashion_mnist.yaml"
# Presets of the default config for the GPU default: (name, overrides). Each runs to its last epoch.
# The first H100 run showed this small CNN launch-bound (step time nearly flat in the batch size) and fp32
# (TF32) faster than bf16 autocast, so the candidates are larger batches in fp32.
PRESETS = [
    ("b256-lr0.1-e12 fp32", ["data.batch_size=256", "optim.lr=0.1", "trainer.precision=32", "trainer.epochs=12"]),
    ("b512-lr0.2-e12 fp32", ["data.batch_size=512", "optim.lr=0.2", "trainer.precision=32", "trainer.epochs=12"]),
    ("b1024-lr0.4-e15 fp32", ["data.batch_size=1024", "optim.lr=0.4", "trainer.precision=32", "trainer.epochs=15"]),
    ("b1024-lr0.8-e12 fp32", ["data.batch_size=1024", "optim.lr=0.8", "trainer.precision=32", "trainer.epochs=12"]),
]


class CheckFailed(Exception):
    pass


@dataclass
class Result:
    name: str
    status: str = "RUNNING"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Ctx:
    out: Path
    work: Path
    dry: bool
    results: dict[str, Result] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    procs: set = field(default_factory=set)
    started: float = field(default_factory=time.perf_counter)
    extra: dict[str, str] = field(default_factory=dict)  # sections appended to results.md (speed, presets)

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def train_args(self, run: str | None = None, batches: int = 30, images: bool = True) -> list[str]:
        """Overrides that make a run short and put it in the work folder (options last: see the CLI's parsing)."""
        common = [f"log.dir={self.work / 'runs'}", "log.progress=none", f"trainer.device={self.device}"]
        if self.dry:
            common += ["trainer.fast_dev_run=true"]
            common += [f"data.root={self.work / 'fashion_mnist'}", "data.val_split=96"] if images else []
        else:
            common += [f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=5"]
        return common + ([f"--run-dir={self.work / run}"] if run else [])

    def kiln(self, *argv: str, expect: int | None = 0, env: dict[str, str] | None = None,
             timeout: float = 240) -> tuple[int, str, str]:
        """Run `kiln ARGV`: a subprocess on the GPU machine, in this process for the dry run (one torch import)."""
        argv = [str(a) for a in argv]
        if self.dry:
            rc, out, err = _in_process(argv, env or {})
        else:
            rc, out, err = self.run([sys.executable, "-m", "kiln", *argv], env=env, timeout=timeout)
        if expect is not None and rc != expect:
            raise CheckFailed(f"kiln {' '.join(argv[:3])} ... exited {rc} (expected {expect}): {_tail(err or out)}")
        return rc, out, err

    def run(self, cmd: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> tuple[int, str, str]:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise CheckFailed(f"timed out after {timeout:.0f} s: {_tail(err or out)}") from None
        finally:
            self.procs.discard(proc)
        return proc.returncode, out, err

    def python(self, *args: str, timeout: float = 240) -> str:
        """A probe of this script in a fresh process (GPU), or in this process (dry run)."""
        if self.dry:
            return PROBES[args[0]](self, *args[1:])
        rc, out, err = self.run([sys.executable, __file__, "--probe", *args, "--work", str(self.work)], timeout=timeout)
        if rc != 0:
            raise CheckFailed(_tail(err or out))
        return out.strip().splitlines()[-1] if out.strip() else ""


def _in_process(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    from kiln.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code if isinstance(e.code, int) else 2
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return rc, out.getvalue(), err.getvalue()


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _test_acc(run: Path) -> float:
    path = run / "test_metrics.json"
    if not path.is_file():
        raise CheckFailed(f"no test_metrics.json in {run}")
    return json.loads(path.read_text())["acc"]


# --------------------------------------------------------------------------- the checks

def check_doctor(c: Ctx) -> str:
    _, out, _ = c.kiln("doctor")
    _, js, _ = c.kiln("doctor", "--json")
    gpus = json.loads(js)["gpus"]
    if not c.dry and not gpus:
        raise CheckFailed(f"kiln doctor sees no GPU: {_tail(out)}")
    return "; ".join(f"{g['name']} {g['memory_total_mib']} MiB, util {g['utilization_pct']}" for g in gpus) or "no GPU"


def check_bf16(c: Ctx) -> str:
    c.kiln("train", CONFIG, "trainer.precision=bf16", "trainer.grad_clip=1.0", "trainer.accumulate=2",
           "trainer.epochs=2", *c.train_args("bf16"))
    m = _metrics(c.work / "bf16")
    return f"test acc {_test_acc(c.work / 'bf16'):.4f}, train loss {m[-1]['train/loss']:.3f}, {m[-1]['time/epoch_s']:.2f} s/epoch"


def check_fp16(c: Ctx) -> str:
    c.kiln("train", CONFIG, "trainer.precision=16", "trainer.grad_clip=1.0", "trainer.accumulate=2",
           "trainer.epochs=2", *c.train_args("fp16"))
    m = _metrics(c.work / "fp16")
    if not m[-1]["train/loss"] < 5:
        raise CheckFailed(f"fp16 training loss {m[-1]['train/loss']}")
    return f"test acc {_test_acc(c.work / 'fp16'):.4f}, train loss {m[-1]['train/loss']:.3f}"


def check_resume_precision(c: Ctx) -> str:
    c.kiln("train", CONFIG, "trainer.precision=bf16", "trainer.epochs=1", *c.train_args("resume_prec"))
    _, _, err = c.kiln("train", "--resume", c.work / "resume_prec", "trainer.epochs=2", "trainer.precision=16")
    if not c.dry and "another precision" not in err:
        raise CheckFailed("no warning that the precision changed on resume")
    return "bf16 -> fp16 resume ok" + ("" if c.dry else ", warned")


def check_sync_free(c: Ctx) -> str:
    return c.python("sync_free")


def check_deterministic(c: Ctx) -> str:
    return c.python("deterministic_resume")


def check_workers(c: Ctx) -> str:
    c.kiln("train", CONFIG, "data.loader=dataloader", "data.num_workers=4", *c.train_args("workers"))
    m = _metrics(c.work / "workers")
    return f"{m[-1]['time/samples_per_s']:,.0f} img/s through 4 DataLoader workers"


def _compile(c: Ctx, mode: str) -> str:
    run = f"compile_{mode}"
    _, _, err = c.kiln("train", CONFIG, f"trainer.compile={mode}", *c.train_args(run, batches=60),
                       env={"TORCH_LOGS": "recompiles"}, timeout=300)
    m = _metrics(c.work / run)
    recompiles = len(re.findall(r"[Rr]ecompiling", err))
    return (f"first step (compile) {m[0].get('time/first_step_s', float('nan')):.1f} s, recompiles {recompiles}, "
            f"{m[-1]['time/samples_per_s']:,.0f} img/s")


def check_resnet(c: Ctx) -> str:
    c.kiln("train", "configs/fashion_mnist_resnet.yaml", "trainer.epochs=1", *c.train_args("resnet"))
    return f"test acc {_test_acc(c.work / 'resnet'):.4f} after {'2' if c.dry else '30'} batches"


def check_transfer(c: Ctx) -> str:
    """The transfer config (frozen backbone, unfreezing at epoch 2, fused AdamW) from a torchvision-layout
    state_dict (no internet here for the ImageNet weights: random weights of the same layout)."""
    import torch
    import torchvision

    weights = c.work / "resnet18_state_dict.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    _, _, err = c.kiln("train", "configs/transfer_resnet18_fashion.yaml", f"model.pretrained={weights}",
                       "optim.name=adamw", "optim.lr=1e-3", "trainer.epochs=2", *c.train_args("transfer", batches=20))
    return f"test acc {_test_acc(c.work / 'transfer'):.4f}; " + _tail(
        "\n".join(line for line in err.splitlines() if "trainable" in line or "pretrained" in line), 2)


def check_image_folder(c: Ctx) -> str:
    """A colour image folder: decoded once, resident on the GPU, per-image crops in one grid_sample; then the
    transfer config at its own 224 px with a torchvision-layout state_dict (random weights: no internet here)."""
    import torch
    import torchvision

    sys.path.insert(0, str(ROOT / "tests"))
    from fakedata import write_image_folder

    root = write_image_folder(c.work / "photos", n=120 if c.dry else 400)
    env = {"KILN_CACHE": str(c.work / "cache")}
    c.kiln("train", "configs/image_folder.yaml", f"data.root={root}", "data.loader=resident", "trainer.epochs=2",
           *c.train_args("folder", images=False), env=env)
    weights = c.work / "resnet18_folder.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    c.kiln("train", "configs/transfer_resnet18_folder.yaml", f"data.root={root}", f"model.pretrained={weights}",
           "trainer.epochs=1", *c.train_args("folder_transfer", batches=10, images=False), env=env)
    m = _metrics(c.work / "folder")
    return (f"image_folder: test acc {_test_acc(c.work / 'folder'):.4f}, {m[-1]['time/samples_per_s']:,.0f} img/s; "
            f"transfer at 224 px: test acc {_test_acc(c.work / 'folder_transfer'):.4f}")


def check_shards(c: Ctx) -> str:
    """An image folder packed into WebDataset shards (kiln data pack), trained from them per batch: byte-range reads
    in two DataLoader workers, pinned memory, the seeded shard order; then tested."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fakedata import write_image_folder

    root = write_image_folder(c.work / "shard_photos", n=120 if c.dry else 600, layout="splits", extras=False)
    env = {"KILN_CACHE": str(c.work / "cache")}
    shutil.rmtree(c.work / "shards", ignore_errors=True)  # pack refuses a folder that holds shards
    _, out, _ = c.kiln("data", "pack", root, c.work / "shards", "--shard-size", "256KB", env=env)
    urls = next(line.split("'")[1] for line in out.splitlines() if "data.urls=" in line)
    c.kiln("train", "configs/image_folder.yaml", "data.name=webdataset", urls, "data.image_size=64",
           "data.cache=off", "data.num_workers=2", "trainer.epochs=2", *c.train_args("shards", images=False), env=env)
    m = _metrics(c.work / "shards")
    return f"webdataset: test acc {_test_acc(c.work / 'shards'):.4f}, {m[-1]['time/samples_per_s']:,.0f} img/s"


def check_tasks(c: Ctx) -> str:
    """Multilabel and regression image CSVs with the shipped configs under the default precision (bf16 autocast on
    the GPU): BCE with logits and the standardised regression loss in mixed precision, metrics in fp32."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fakedata import write_multilabel_image_csv, write_regression_image_csv

    n = 96 if c.dry else 480
    env = {"KILN_CACHE": str(c.work / "cache")}
    small = ["data.image_size=32", "trainer.min_steps=null", f"trainer.epochs={1 if c.dry else 12}"]
    blobs, discs = write_multilabel_image_csv(c.work / "blobs", n=n), write_regression_image_csv(c.work / "discs", n=n)
    c.kiln("train", "configs/multilabel_csv.yaml", f"data.root={blobs}", *small,
           *c.train_args("multilabel", images=False), env=env)
    c.kiln("train", "configs/regression_csv.yaml", f"data.root={discs}", "data.label_column=[brightness,x]", *small,
           *c.train_args("regression", images=False), env=env)
    ml = json.loads((c.work / "multilabel" / "test_metrics.json").read_text())
    reg = json.loads((c.work / "regression" / "test_metrics.json").read_text())
    return f"multilabel test micro-F1 {ml['f1_micro']:.4f}; regression test R² {reg['r2']:.4f}, MAE {reg['mae']:.4g}"


def _text(c: Ctx, name: str, config: str, *overrides: str) -> str:
    root = c.work / "ag_news"
    c.kiln("train", config, f"data.root={root}", "data.val_split=0.1", *overrides,
           *c.train_args(name, batches=20, images=False))
    return f"test acc {_test_acc(c.work / name):.4f}"


def check_lr_find(c: Ctx) -> str:
    _, out, _ = c.kiln("lr-find", CONFIG, f"log.dir={c.work / 'runs'}", f"trainer.device={c.device}",
                       *([f"data.root={c.work / 'fashion_mnist'}", "data.val_split=96"] if c.dry else []),
                       "--steps", "30")
    return _tail(out, 1)


def _find_batch_size(c: Ctx, optimizer: str) -> str:
    _, out, _ = c.kiln("train", CONFIG, f"optim.name={optimizer}", f"log.dir={c.work / 'runs'}", "--find-batch-size",
                       timeout=300)
    found = re.search(r"largest batch size that fits: (\d+)", out)
    if not found:
        raise CheckFailed(f"no batch size printed: {_tail(out)}")
    return f"{optimizer}: {found.group(1)}"


def check_oom(c: Ctx) -> str:
    """Out of memory: kiln's message (the peak by category, the cheapest fix) and, with trainer.memory_snapshot,
    the allocator's history in memory_snapshot.pickle."""
    rc, _, err = c.kiln("train", CONFIG, "model.name=gpu_hog:MemoryHog", "model.args={}", "trainer.memory_snapshot=true",
                        *c.train_args("oom"), expect=None)
    if rc == 0 or "out of memory in the training step" not in err or "Traceback" in err:
        raise CheckFailed(f"exit {rc}, expected kiln's out-of-memory message: {_tail(err)}")
    if "parameters" not in err or not (c.work / "oom" / "memory_snapshot.pickle").is_file():
        raise CheckFailed(f"no categories or no memory_snapshot.pickle: {_tail(err)}")
    return f"exit {rc}, snapshot written: " + _tail(err, 1)[:160]


def check_eval_commands(c: Ctx) -> str:
    run = c.work / "bf16"
    c.kiln("test", run)
    image = c.work / "shirt.png"
    c.python("write_png", str(image))
    _, out, _ = c.kiln("predict", run, image, "--json")
    c.kiln("inspect", run, "--sample", "2")
    c.kiln("report", run)
    if not (run / "report.html").is_file():
        raise CheckFailed("kiln report wrote no report.html")
    return "test, predict, inspect, report ok; predicted " + json.loads(out.splitlines()[0])["label"]


def check_pixels_boxes(c: Ctx) -> str:
    """Segmentation (kiln's U-Net) and detection (Faster R-CNN mobilenet 320, kiln's fcos_small) on generated scenes
    under the default precision (bf16 autocast on the GPU): the tasks' losses, mIoU and mAP, predicted masks and
    boxes, a detector's ONNX export."""
    from kiln.commands.samples import write_detection_scenes, write_segmentation_scenes

    scenes = write_segmentation_scenes(c.work / "scenes", n=48 if c.dry else 160)
    c.kiln("train", "configs/segmentation_folder.yaml", f"data.root={scenes}", "data.image_size=48",
           "trainer.epochs=3", *c.train_args("segmentation", images=False))
    c.kiln("predict", c.work / "segmentation", scenes / "test" / "images", "--out", c.work / "masks", "--tta", "hflip")
    boxes = write_detection_scenes(c.work / "boxes", n=48 if c.dry else 160, size=64)
    c.kiln("train", "configs/detection_coco.yaml", f"data.root={boxes}", "data.image_size=64", "data.batch_size=8",
           "trainer.epochs=2", *c.train_args("detection", batches=20, images=False))
    c.kiln("train", "configs/detection_coco.yaml", f"data.root={boxes}", "data.image_size=64", "data.batch_size=8",
           "model.name=fcos_small", "trainer.epochs=4", *c.train_args("fcos", batches=20, images=False))
    c.kiln("export", c.work / "fcos", "--format", "onnx")  # trained on the GPU, traced and checked on the CPU
    seg = json.loads((c.work / "segmentation" / "test_metrics.json").read_text())
    det = json.loads((c.work / "detection" / "test_metrics.json").read_text())
    fcos = json.loads((c.work / "fcos" / "test_metrics.json").read_text())
    boxes_diff = json.loads((c.work / "fcos" / "model.onnx.json").read_text())["parity"]["boxes"]
    import yaml

    model = yaml.safe_load((c.work / "detection" / "config.yaml").read_text())["model"]["name"]  # the device's choice
    return (f"segmentation mIoU {seg['miou']:.3f}; {model} mAP {det['map']:.3f}, mAP@.5 {det['map_50']:.3f}; "
            f"fcos_small mAP {fcos['map']:.3f}, its ONNX boxes within {boxes_diff:.2g} px")


def check_competition(c: Ctx) -> str:
    """The competition tools on the GPU: MixUp + CutMix + TrivialAugment + random erasing on device batches, EMA
    and keep_last_k, a distilled student (the teacher on the same device and autocast), kiln average, TTA, an
    ensemble's submission."""
    from kiln.commands.samples import write_sample_photos

    photos = write_sample_photos(c.work / "comp_photos", per_class=16 if c.dry else 80)
    augment = ["data.augment.mixup=0.2", "data.augment.cutmix=1.0", "data.augment.preset=trivialaugment",
               "data.augment.random_erasing=0.25", "trainer.ema.decay=0.99", "trainer.checkpoint.keep_last_k=2",
               "data.image_size=32", "trainer.min_steps=null", "trainer.epochs=3"]
    env = {"KILN_CACHE": str(c.work / "cache")}
    c.kiln("train", "configs/image_folder.yaml", f"data.root={photos}", *augment, *c.train_args("teacher", images=False),
           env=env)
    c.kiln("train", "configs/image_folder.yaml", f"data.root={photos}", *augment, "model.args.channels=[8,16,32]",
           f"task.distill.teacher={c.work / 'teacher'}", *c.train_args("student", images=False), env=env)
    c.kiln("average", c.work / "teacher", "--last", "2" if not c.dry else "1", env=env)
    c.kiln("test", c.work / "teacher", "--checkpoint", "averaged", "--tta", "flips", env=env)
    c.kiln("test", c.work / "teacher", c.work / "student", "--tta", "hflip", "--out", c.work / "ensemble.json",
           env=env)
    acc = json.loads((c.work / "ensemble.json").read_text())["acc"]
    return f"teacher {_test_acc(c.work / 'teacher'):.3f}, student {_test_acc(c.work / 'student'):.3f}, ensemble {acc:.3f}"


def check_profile(c: Ctx) -> str:
    """kiln train --profile-only on the GPU: CUDA kernels under the loop's ranges, the GPU's busy share, peak
    memory and a bottleneck."""
    longer = ["trainer.fast_dev_run=false", "data.batch_size=16", "trainer.epochs=1"] if c.dry else []
    c.kiln("train", CONFIG, "--profile-only", "trainer.profile.wait=2", "trainer.profile.warmup=1",
           "trainer.profile.steps=5", *c.train_args("profile"), *longer)
    profile = json.loads((c.work / "profile" / "profile.json").read_text())
    busy = f", GPU busy {profile['gpu_busy']:.0%}" if "gpu_busy" in profile else ""
    summary = f"{profile['step_ms']:.1f} ms per step{busy}; bottleneck: {profile['bottleneck'][:90]}"
    if c.dry:
        return summary
    c.kiln("train", CONFIG, "model.name=gpu_hog:SyncsEveryStep", "model.args={}", "--profile-only",
           "trainer.profile.wait=2", "trainer.profile.warmup=1", "trainer.profile.steps=5", *c.train_args("syncs"))
    syncing = json.loads((c.work / "syncs" / "profile.json").read_text())
    if "host syncs" not in syncing["bottleneck"]:
        raise CheckFailed(f"a model with .item() in its forward was not named as syncing: {syncing['bottleneck']}")
    return summary + f"; .item() model: {syncing['host_syncs_per_step']:.0f} syncs per step named"


def check_ddp_gloo(c: Ctx) -> str:
    c.kiln("train", CONFIG, "trainer.backend=gloo", *c.train_args("ddp_gloo"), "--nproc", "2", timeout=300)
    return f"2 processes sharing the GPU via gloo: test acc {_test_acc(c.work / 'ddp_gloo'):.4f}"


def check_ddp_nccl_layout(c: Ctx) -> str:
    import torch

    count = torch.cuda.device_count()
    if count >= 2:
        c.kiln("train", CONFIG, *c.train_args("ddp_nccl"), "--nproc", "2", timeout=300)
        return f"2 processes on 2 of {count} GPUs via nccl ok"
    _, _, err = c.kiln("train", CONFIG, *c.train_args(), "--nproc", "2", expect=2)
    return "refused before launch: " + _tail(err, 1)[:160]


def check_fsdp(c: Ctx) -> str:
    """trainer.strategy=fsdp in bf16 (parameters bf16, reductions fp32): nccl on 2 GPUs, else gloo sharing one."""
    import torch

    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"
    c.kiln("train", CONFIG, f"trainer.backend={backend}", "trainer.strategy=fsdp", "trainer.precision=bf16",
           *c.train_args("fsdp"), "--nproc", "2", timeout=300)
    return f"FSDP on 2 processes via {backend}, bf16: test acc {_test_acc(c.work / 'fsdp'):.4f}"


def check_speed(c: Ctx) -> str:
    path = c.work / "speed.json"
    rc, out, err = c.run([sys.executable, "benchmarks/train_speed.py", "--device", "cuda", "--epochs", "3",
                          "--json", str(path)], timeout=330)
    c.extra["Speed (benchmarks/train_speed.py --device cuda --epochs 3)"] = out.strip()
    if rc != 0 or not path.is_file():
        raise CheckFailed(_tail(err))
    rows = json.loads(path.read_text())["rows"]
    return ", ".join(f"{k} {v['s_per_epoch']:.2f} s/epoch" for k, v in rows.items())


def check_presets(c: Ctx) -> str:
    lines = ["| preset | epochs run | s/epoch | time to 93 % (s) | first step (s) | test acc per epoch |",
             "|---|---|---|---|---|---|"]
    best = None
    for name, overrides in PRESETS:
        epochs = next(o for o in overrides if o.startswith("trainer.epochs=")).split("=")[1]
        path = c.work / f"preset_{len(lines)}.json"
        rc, _, err = c.run([sys.executable, "benchmarks/train_speed.py", "--device", "cuda", "--methods", "kiln",
                            "--epochs", epochs, "--target", "0.93", "--json", str(path), "--override",
                            *[o for o in overrides if not o.startswith("trainer.epochs=")]], timeout=200)
        if rc != 0 or not path.is_file():
            lines.append(f"| {name} | failed: {_tail(err, 2)} | | | | |")
            continue
        r = json.loads(path.read_text())["rows"]["kiln"]
        accs = " ".join(f"{a:.4f}" for a in r["accs"])
        to93 = r["to_target"]
        lines.append(f"| {name} | {len(r['accs'])} | {r['s_per_epoch']:.2f} | "
                     f"{'not reached' if to93 is None else f'{to93:.2f}'} | {r['first_step_s'] or 0:.2f} | {accs} |")
        if to93 is not None and (best is None or to93 < best[1]):
            best = (name, to93)
        c.extra["Presets of the default config (time to 93 % test accuracy)"] = "\n".join(lines)
    return f"fastest to 93 %: {best[0]} in {best[1]:.2f} s" if best else "no preset reached 93 %"


def check_best_config(c: Ctx) -> str:
    c.kiln("train", "configs/fashion_mnist_best.yaml", f"log.dir={c.work / 'runs'}", "log.progress=none",
           f"--run-dir={c.work / 'best'}", timeout=330)
    m = [r for r in _metrics(c.work / "best") if "time/epoch_s" in r]
    return (f"test acc {_test_acc(c.work / 'best'):.4f}, {sum(r['time/epoch_s'] for r in m):.1f} s of training "
            f"over {len(m)} epochs (+{m[0].get('time/first_step_s', 0):.1f} s first step)")


@dataclass
class Check:
    name: str
    fn: Callable[[Ctx], str]
    cuda_only: bool = False
    timed: bool = False  # runs alone, after the functional checks
    needs: str | None = None


CHECKS = [
    Check("doctor", check_doctor),
    Check("train bf16 (clip, accumulate)", check_bf16),
    Check("train fp16 (scaler, clip, accumulate)", check_fp16),
    Check("resume bf16 -> fp16", check_resume_precision),
    Check("sync-free training step", check_sync_free, cuda_only=True),
    Check("deterministic resume bit-exact", check_deterministic),
    Check("DataLoader with workers", check_workers),
    Check("compile default", lambda c: _compile(c, "default"), cuda_only=True),
    Check("compile reduce-overhead", lambda c: _compile(c, "reduce-overhead"), cuda_only=True),
    Check("resnet18 small input", check_resnet),
    Check("transfer: frozen backbone, fused AdamW", check_transfer),
    Check("image folder resident + transfer 224", check_image_folder),
    Check("multilabel + regression CSVs", check_tasks),
    Check("webdataset shards, 2 workers", check_shards),
    Check("text embedding_bag", lambda c: _text(c, "text_bag", "configs/ag_news.yaml")),
    Check("text gru (autocast)", lambda c: _text(c, "text_gru", "configs/ag_news.yaml", "model.name=gru",
                                                 "data.text.collate=pad", "trainer.precision=auto")),
    Check("text transformer", lambda c: _text(c, "text_transformer", "configs/ag_news_transformer.yaml")),
    Check("lr-find", check_lr_find),
    Check("find-batch-size sgd", lambda c: _find_batch_size(c, "sgd"), cuda_only=True),
    Check("find-batch-size adamw", lambda c: _find_batch_size(c, "adamw"), cuda_only=True),
    Check("out of memory message", check_oom, cuda_only=True),
    Check("test, predict, inspect, report", check_eval_commands, needs="train bf16 (clip, accumulate)"),
    Check("segmentation + detection", check_pixels_boxes),
    Check("competition: mixing, presets, distill, average, TTA, ensemble", check_competition),
    Check("profile", check_profile),
    Check("DDP 2 processes, gloo", check_ddp_gloo, cuda_only=True),
    Check("DDP nccl GPU layout", check_ddp_nccl_layout, cuda_only=True),
    Check("FSDP 2 processes, bf16", check_fsdp, cuda_only=True),
    Check("speed benchmark", check_speed, cuda_only=True, timed=True),
    Check("default-config presets", check_presets, cuda_only=True, timed=True),
    Check("fashion_mnist_best", check_best_config, cuda_only=True, timed=True),
]


# --------------------------------------------------------------------------- probes (run in a fresh process)

def probe_sync_free(c: Ctx) -> str:
    """The default config's training step under torch.cuda.set_sync_debug_mode("error"): any host sync raises."""
    from itertools import islice

    import torch

    from kiln.config import load_config
    from kiln.core.state import seed_everything
    from kiln.data import DataRequest, build_data
    from kiln.train.build import build_trainer
    from kiln.train.loop import _check_finite, train_step

    device = torch.device("cuda")
    cfg = load_config(ROOT / CONFIG, ["trainer.device=cuda", "trainer.precision=bf16", "log.progress=none"])
    seed_everything(cfg.seed)
    data = build_data(cfg.data, DataRequest(seed=cfg.seed, device=device, channels_last=True, splits=("train",)))
    t = build_trainer(cfg, data, device)
    precision = t.precision
    batches = t.train_batches.epoch(0)
    for inputs, targets in islice(batches, 3):  # warm-up: cuDNN autotuning, optimizer state
        train_step(t, inputs, targets, True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        try:
            torch.zeros(1, device=device).item()
            raise CheckFailed("set_sync_debug_mode('error') did not catch a planted .item()")
        except RuntimeError:
            pass  # the mode works
        steps = 0
        for inputs, targets in islice(batches, 60):
            train_step(t, inputs, targets, True)
            if (steps + 1) % cfg.trainer.log_every_n_steps == 0:
                _check_finite(t, wait=False)
            steps += 1
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return f"{steps} steps ({precision}, batch {cfg.data.batch_size}, NaN checks every " \
           f"{cfg.trainer.log_every_n_steps}) with no host sync"


def probe_deterministic_resume(c: Ctx) -> str:
    """trainer.deterministic=true: interrupted mid-epoch then resumed equals uninterrupted, bit for bit."""
    import torch

    from kiln.config import load_config
    from kiln.core.errors import TrainingInterrupted
    from kiln.core.state import load_checkpoint, seed_everything
    from kiln.train import session
    from kiln.train.callbacks import LambdaCallback

    def cfg(folder: str):
        return load_config(ROOT / CONFIG, [*c.train_args(batches=20), "trainer.deterministic=true",
                                           "trainer.epochs=2", "trainer.fast_dev_run=false",
                                           "trainer.limit_train_batches=6" if c.dry else "trainer.limit_train_batches=20",
                                           f"log.dir={c.work / folder}"]
                           + (["trainer.limit_val_batches=2", "data.batch_size=16"] if c.dry else []))

    full = session.train(cfg("det_full"), quiet=True)

    def stop(trainer):
        if trainer.state.step == (4 if c.dry else 13):
            trainer.stop_requested = True

    try:
        session.train(cfg("det_cut"), quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
        raise CheckFailed("the run was not interrupted")
    except TrainingInterrupted:
        pass
    cut_dir = next((c.work / "det_cut").glob("*/*"))
    resumed = session.train(cfg("det_cut"), resume=cut_dir, quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    if differing:
        raise CheckFailed(f"{len(differing)} tensors differ after resume, e.g. {differing[:3]}")
    seed_everything(0, deterministic=False)  # what the next (non-deterministic) run in this process does
    if torch.are_deterministic_algorithms_enabled():
        raise CheckFailed("deterministic algorithms stayed on for a later non-deterministic run")
    return f"{len(a)} tensors bit-identical after an interrupted + resumed run; deterministic mode switched off after"


def probe_write_png(c: Ctx, path: str) -> str:
    """A real Fashion-MNIST test image (or a generated one in the dry run) as a PNG file."""
    from PIL import Image

    from kiln.data.idx import load_split
    from kiln.data.registry import get_dataset, locate

    spec = get_dataset("fashion_mnist")
    folder = c.work / "fashion_mnist" if c.dry else locate(spec, None, False)
    images, _ = load_split(spec, folder, "test")
    Image.fromarray(images[0].squeeze().numpy()).resize((56, 56)).save(path)
    return path


PROBES = {"sync_free": probe_sync_free, "deterministic_resume": probe_deterministic_resume,
          "write_png": probe_write_png}


# --------------------------------------------------------------------------- running and reporting

def run_check(c: Ctx, check: Check, futures: dict) -> None:
    result = c.results[check.name]
    if check.needs and futures.get(check.needs) is not None:
        futures[check.needs].result()
    if check.needs and c.results[check.needs].status != "PASS":
        result.status, result.detail = "SKIP", f"needs '{check.needs}', which did not pass"
        write_results(c)
        return
    start = time.perf_counter()
    try:
        result.detail = check.fn(c)
        result.status = "PASS"
    except CheckFailed as e:
        result.status, result.detail = "FAIL", str(e)
    except Exception as e:  # noqa: BLE001 — a broken check is a failed check, and the others go on
        result.status, result.detail = "FAIL", f"{type(e).__name__}: {e}"
    result.seconds = time.perf_counter() - start
    print(f"{result.status} {check.name} ({result.seconds:.1f} s): {result.detail}", flush=True)
    write_results(c)


def write_results(c: Ctx, note: str = "") -> None:
    with c.lock:
        rows = list(c.results.values())
        counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIP", "RUNNING", "PENDING")}
        lines = [f"# kiln GPU check — {_machine()}", "",
                 f"wall time so far {time.perf_counter() - c.started:.0f} s; "
                 + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + (f"; {note}" if note else ""), "",
                 "| check | result | seconds | detail |", "|---|---|---|---|"]
        lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.detail.replace('|', '/')} |" for r in rows]
        for title, body in c.extra.items():
            lines += ["", f"## {title}", "", body]
        (c.out / "results.md").write_text("\n".join(lines) + "\n")
        (c.out / "results.json").write_text(json.dumps(
            {"machine": _machine(), "wall_s": time.perf_counter() - c.started, "note": note,
             "checks": [r.__dict__ for r in rows], "extra": c.extra}, indent=1))


_MACHINE: list[str] = []


def _machine() -> str:
    if not _MACHINE:
        import platform

        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (CPU dry run)"
        _MACHINE.append(f"{gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                        f"Python {platform.python_version()}")
    return _MACHINE[0]


def prepare(c: Ctx) -> None:
    """Generated text (both modes) and, for the dry run, tiny image data in the real formats."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fakedata import write_ag_news, write_idx_dataset

    write_ag_news(c.work / "ag_news", n_train=2000 if not c.dry else 200, n_test=400 if not c.dry else 60)
    if c.dry:
        write_idx_dataset(c.work / "fashion_mnist", n_train=240, n_test=64)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path)
    p.add_argument("--cpu-dry-run", action="store_true")
    p.add_argument("--parallel", type=int, default=4, help="functional checks at a time on the GPU (default 4)")
    p.add_argument("--only", help="run only the checks whose names contain one of these comma-separated texts")
    p.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        print(PROBES[args.probe[0]](Ctx(out=args.work, work=args.work, dry=False), *args.probe[1:]))
        return 0
    if args.out is None:
        p.error("give the folder to write results into")
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("no CUDA device: use --cpu-dry-run to test the plumbing", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    c = Ctx(out=args.out.resolve(), work=(args.out / "work").resolve(), dry=args.cpu_dry_run)
    c.work.mkdir(exist_ok=True)
    checks = [k for k in CHECKS if not args.only or any(part in k.name for part in args.only.split(","))]
    for k in checks:
        c.results[k.name] = Result(k.name, "PENDING")

    def cut_short(signum, frame):
        for proc in list(c.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        write_results(c, note=f"cut short by signal {signum}")
        os._exit(124)

    signal.signal(signal.SIGTERM, cut_short)
    prepare(c)
    for k in checks:
        if k.cuda_only and c.dry:
            c.results[k.name] = Result(k.name, "SKIP", 0.0, "needs CUDA (CPU dry run)")
    write_results(c)
    runnable = [k for k in checks if not (k.cuda_only and c.dry)]
    functional, timed = [k for k in runnable if not k.timed], [k for k in runnable if k.timed]
    if c.dry:  # one process, one check at a time
        for k in functional:
            run_check(c, k, {})
    else:
        futures: dict = {}
        with ThreadPoolExecutor(args.parallel) as pool:
            for k in functional:  # a check is submitted after the one it needs: FIFO never deadlocks
                futures[k.name] = pool.submit(run_check, c, k, futures)
    for k in timed:  # alone on the GPU
        run_check(c, k, {})
    write_results(c, note="finished")
    failed = [r.name for r in c.results.values() if r.status == "FAIL"]
    print(f"results: {c.out / 'results.md'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
