"""`kiln train --profile` (trainer.profile): torch.profiler over a few training steps after a warm-up, then where
each step's time went and the setting to change.

The loop marks its phases as profiler ranges — `kiln.data` (waiting for the next batch: loading, decoding,
augmenting, copying), `kiln.forward` (the model and the loss), `kiln.backward`, `kiln.optimizer` — so the same
machinery measures a CPU (wall time of the ranges) and a GPU (the kernels under them, from CUPTI). The trace goes
to profile/trace.json.gz (Perfetto, chrome://tracing, TensorBoard's profiler), the figures to profile.json.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kiln.config import ProfileConfig
from kiln.core import dist
from kiln.data.loaders import wait_advice
from kiln.train.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.train.loop import Trainer

log = logging.getLogger("kiln")
PHASES = ("data", "forward", "backward", "optimizer")
SYNC_OPS = ("aten::_local_scalar_dense", "aten::item")  # a device value read on the host: the GPU must finish first


class StepProfile(Callback):
    def __init__(self, cfg: ProfileConfig, folder: Path, num_workers: int):
        self.cfg, self.folder, self.num_workers = cfg, folder, num_workers
        self.profiler: torch.profiler.profile | None = None
        self.recorded: dict[str, Any] | None = None
        self.began = 0.0
        self.steps_seen = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        cfg = self.cfg
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's own stage and device-probe lines: errors only
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(
            activities=activities, on_trace_ready=lambda p: self._ready(p, trainer),
            schedule=torch.profiler.schedule(wait=cfg.wait, warmup=cfg.warmup, active=cfg.steps, repeat=1))
        self.profiler.start()
        log.info("profiling %d training steps after %d (trainer.profile)", cfg.steps, cfg.wait + cfg.warmup)

    def on_step_end(self, trainer: Trainer) -> None:
        if self.profiler is None:
            return
        self.steps_seen += 1
        if self.steps_seen == self.cfg.wait + self.cfg.warmup:  # the recorded steps start now
            _sync(trainer.device)
            self.began = time.perf_counter()
        self.profiler.step()  # after the last recorded step: calls _ready
        if self.recorded is not None:  # stopped here, not inside the profiler's own callback
            self._stop()
            if self.cfg.stop:  # --profile-only: the epoch ends after this step
                trainer.stop_training = True

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.profiler is not None:  # training ended before the recorded steps did
            log.warning("training ended after %d steps, before the profile's %d (trainer.profile: wait %d, warmup %d, "
                        "steps %d): nothing was measured", self.steps_seen, self.cfg.wait + self.cfg.warmup +
                        self.cfg.steps, self.cfg.wait, self.cfg.warmup, self.cfg.steps)
            self._stop()

    def on_interrupt(self, trainer: Trainer) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None

    def _ready(self, profiler: torch.profiler.profile, trainer: Trainer) -> None:
        if self.steps_seen < self.cfg.wait + self.cfg.warmup + self.cfg.steps:  # stopped early: a partial record
            return
        _sync(trainer.device)
        wall = time.perf_counter() - self.began
        self.recorded = measured(profiler, trainer, wall, self.cfg.steps)
        self.recorded["bottleneck"] = bottleneck(self.recorded, trainer, self.num_workers)
        if dist.current().is_main:
            self._write(profiler)
            log.info("%s", table(self.recorded))

    def _write(self, profiler: torch.profiler.profile) -> None:
        folder = self.folder / "profile"
        folder.mkdir(parents=True, exist_ok=True)
        raw = folder / "trace.json"
        profiler.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(folder / "trace.json.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
        (self.folder / "profile.json").write_text(json.dumps(self.recorded, indent=2) + "\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(profiler: torch.profiler.profile, trainer: Trainer, wall: float, steps: int) -> dict[str, Any]:
    """Per step: the wall time, each phase's time (host; on a GPU its kernels' too), host syncs and throughput."""
    events = {e.key: e for e in profiler.key_averages()}
    per_step = {name: events[f"kiln.{name}"].cpu_time_total / 1e3 / steps if f"kiln.{name}" in events else 0.0
                for name in PHASES}
    step_ms = 1e3 * wall / steps
    out: dict[str, Any] = {
        "device": str(trainer.device), "steps": steps, "step_ms": step_ms,
        "phases_ms": {**per_step, "other": max(0.0, step_ms - sum(per_step.values()))},
        "shares": {name: ms / step_ms for name, ms in per_step.items()},
        "host_syncs_per_step": sum(events[op].count for op in SYNC_OPS if op in events) / steps,
        "samples_per_s": trainer.train_batches.batch_size * steps / wall}
    if trainer.device.type == "cuda":
        kernels = sum(e.self_device_time_total for e in profiler.key_averages() if e.self_device_time_total > 0)
        out["gpu_busy"] = kernels / 1e3 / steps / step_ms
        out["gpu_peak_memory_mib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
        try:
            out["gpu_utilization"] = torch.cuda.utilization(trainer.device)  # NVML's, when pynvml is installed
        except Exception:  # noqa: BLE001 — no NVML here: the kernel time above says enough
            pass
    return out


def bottleneck(m: dict[str, Any], trainer: Trainer, num_workers: int) -> str:
    """The one thing to change first, from the measured shares."""
    shares = m["shares"]
    if shares["data"] >= 0.3:
        return f"{shares['data']:.0%} of each step waits for data: {wait_advice(trainer.data, num_workers)}"
    if trainer.device.type == "cuda" and m["host_syncs_per_step"] >= 1:
        return (f"{m['host_syncs_per_step']:.0f} host syncs per step (aten::item: a .item(), print or Python `if` on "
                "a tensor in the model or the loss — the trace shows where): each one stops the CPU until the GPU "
                "has finished")
    if trainer.device.type == "cuda" and m.get("gpu_busy", 1.0) < 0.5:
        return (f"the GPU computes {m['gpu_busy']:.0%} of each step and idles between kernels: trainer.compile=true "
                "(fewer, fused kernels) or a larger data.batch_size")
    compute = shares["forward"] + shares["backward"]
    return (f"the model's own work: forward {shares['forward']:.0%}, backward {shares['backward']:.0%} of each step "
            f"({compute:.0%} together)" + (": trainer.precision=bf16, trainer.channels_last, or a smaller model or "
                                           "data.image_size" if compute >= 0.5 else ""))


def table(m: dict[str, Any]) -> str:
    rows = [f"profile of {m['steps']} steps on {m['device']}: {m['step_ms']:.1f} ms per step, "
            f"{m['samples_per_s']:,.0f} samples/s"]
    for name, ms in m["phases_ms"].items():
        rows.append(f"  {name:<10}{ms:9.2f} ms  {ms / m['step_ms']:6.1%}")
    rows.append(f"  host syncs per step: {m['host_syncs_per_step']:.1f}"
                + (f"; GPU busy {m['gpu_busy']:.0%}, peak memory {m['gpu_peak_memory_mib']:,.0f} MiB"
                   if "gpu_busy" in m else ""))
    rows.append(f"bottleneck: {m['bottleneck']}")
    return "\n".join(rows)
