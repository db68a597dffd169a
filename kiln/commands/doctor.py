"""`kiln doctor`: what this machine offers for training, and where kiln's data and extras stand."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from typing import Any


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def host() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        available = os.sysconf("SC_AVPHYS_PAGES")
        info["ram_gib"] = round(pages * size / 2**30, 1)
        info["ram_free_gib"] = round(available * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {**info, **limits()}


# Below these, DataLoader workers fail in ways whose messages do not name the cause.
SHM_ADVISED_GIB = 1.0  # worker processes hand batches over through /dev/shm ("bus error" when it is full)
OPEN_FILES_ADVISED = 4096  # each worker's shared tensors hold file descriptors ("received 0 items of ancdata")


def limits() -> dict[str, Any]:
    """What DataLoader workers run into: the cores this process may use, /dev/shm's size and the open-file limit,
    each with a warning when it is low."""
    out: dict[str, Any] = {"usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                           else os.cpu_count()}
    warnings = []
    try:
        shm = os.statvfs("/dev/shm")
        out["shm_gib"] = round(shm.f_blocks * shm.f_frsize / 2**30, 2)
        if out["shm_gib"] < SHM_ADVISED_GIB:
            warnings.append(f"/dev/shm holds {out['shm_gib']} GiB: DataLoader workers may die with a bus error; "
                            "in Docker run with --shm-size=8g (or --ipc=host), or set data.num_workers=0")
    except OSError:
        out["shm_gib"] = None
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        out["open_files_limit"] = soft
        if 0 < soft < OPEN_FILES_ADVISED:
            warnings.append(f"at most {soft} open files: many DataLoader workers can run out ('received 0 items of "
                            f"ancdata'); raise it with `ulimit -n {OPEN_FILES_ADVISED * 16}`")
    except (ImportError, ValueError, OSError):
        out["open_files_limit"] = None
    out["warnings"] = warnings
    return out


def torch_info() -> dict[str, Any]:
    import torch

    info = {"torch": torch.__version__, "torchvision": _version("torchvision"),
            "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
            "threads": torch.get_num_threads(),
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None}
    return info


def gpus() -> tuple[list[dict[str, Any]], str | None]:
    """Each GPU's name, memory, utilisation and processes through NVIDIA's management library (NVML)."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [], f"no NVIDIA driver or GPU ({e})"
    try:
        return [_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())], None
    except pynvml.NVMLError as e:
        return [], f"NVML could not list the GPUs ({e})"
    finally:
        pynvml.nvmlShutdown()


def _gpu(pynvml, index: int) -> dict[str, Any]:
    """One GPU's facts; a query this GPU or driver does not support (MIG, vGPU, old drivers) gives "n/a"."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def query(fn, *args, convert=lambda v: v):
        try:
            return convert(fn(handle, *args))
        except pynvml.NVMLError:
            return "n/a"

    def mib(value: int | None) -> int:
        return (value or 0) // 2**20

    return {"index": index,
            "name": query(pynvml.nvmlDeviceGetName, convert=lambda n: n.decode() if isinstance(n, bytes) else n),
            "memory_used_mib": query(pynvml.nvmlDeviceGetMemoryInfo, convert=lambda m: mib(m.used)),
            "memory_total_mib": query(pynvml.nvmlDeviceGetMemoryInfo, convert=lambda m: mib(m.total)),
            "utilization_pct": query(pynvml.nvmlDeviceGetUtilizationRates, convert=lambda u: u.gpu),
            "processes": query(pynvml.nvmlDeviceGetComputeRunningProcesses, convert=lambda procs: [
                {"pid": p.pid, "memory_mib": mib(p.usedGpuMemory)} for p in procs])}


def datasets() -> list[dict[str, Any]]:
    from kiln.data.registry import DATASETS, candidate_dirs

    rows = []
    for name, spec in sorted(DATASETS.items()):
        if not hasattr(spec, "find"):  # image_folder / image_csv: the user's own files, wherever data.root says
            continue
        where = next((spec.find(d) for d in candidate_dirs(spec, None) if spec.find(d) is not None), None)
        rows.append({"name": name, "found": str(where) if where else None,
                     "looked_in": [str(d) for d in candidate_dirs(spec, None)]})
    return rows


EXTRAS = {"timm": "timm", "ray": "ray", "wandb": "wandb", "mlflow": "mlflow", "lightning": "lightning",
          "optuna-dashboard": "optuna_dashboard", "plotly": "plotly", "nvidia-ml-py": "pynvml"}


def extras() -> dict[str, str | None]:
    return {name: (_version(name) or "installed") if importlib.util.find_spec(module) else None
            for name, module in EXTRAS.items()}


def report() -> dict[str, Any]:
    gpu_list, gpu_note = gpus()
    from kiln.core.launcher import detect

    return {"host": host(), "torch": torch_info(), "gpus": gpu_list, "gpu_note": gpu_note,
            "launcher": detect().describe(), "datasets": datasets(), "extras": extras()}
