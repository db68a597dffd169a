"""The CUDA paths, shown on a CPU where they can be: host syncs in the step, the batch-size probe, DDP device
layout, precision choice and changes, determinism switching, the GRU under autocast, NVML guards, and the GPU
check's dry run."""

import subprocess
import sys
import types
from itertools import islice

import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import ROOT, tiny_config
from kiln.commands.tune.workers import visible_gpus
from kiln.config import build_config
from kiln.core.dist import ProcessInfo
from kiln.core.errors import KilnError
from kiln.core.state import seed_everything
from kiln.data import DataRequest, build_data
from kiln.models import prepare_model
from kiln.tasks import build_task
from kiln.train import device as device_mod
from kiln.train.batch_size import cuda_probe, is_out_of_memory
from kiln.train.build import build_trainer
from kiln.train.loop import Trainer, train_step
from kiln.train.metrics import RunningMean
from kiln.train.optim import build_optimizer
from kiln.train.plan import RunPlan
from kiln.train.step import TrainStep

CPU = torch.device("cpu")
# Calls that read a device tensor on the host, or copy a host value to the device: each one blocks the CPU
# until the GPU catches up (or the copy is done) when the tensors live on a GPU.
SYNCING = {"item", "tolist", "__bool__", "cpu", "numpy", "nonzero", "new_tensor", "tensor", "as_tensor", "__int__",
           "__float__", "__index__"}


class SyncRecorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in SYNCING:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _trainer(tmp_path, idx_root, task=None, **trainer) -> Trainer:
    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 1, **trainer}, task=task or {}))
    data = build_data(cfg.data, DataRequest(seed=cfg.seed, device=CPU, splits=("train",), channels_last=True))
    return build_trainer(RunPlan.of(cfg, CPU, ProcessInfo()), data)


def test_the_training_step_reads_nothing_back_from_the_device(tmp_path, idx_root):
    t = _trainer(tmp_path, idx_root, task={"label_smoothing": 0.1}, grad_clip=1.0)
    batches = t.data.train.epoch(0)
    next(batches)  # the epoch's start copies its index order once: not a per-step cost
    with SyncRecorder() as recorder:
        for inputs, targets in islice(batches, 4):
            train_step(t, inputs, targets, optimizer_step=True)
    assert recorder.calls == []
    assert t.state.step == 4 and t.step.running.count == 4 * 32


def test_the_sync_recorder_catches_what_the_old_step_did():
    running = torch.zeros(3, dtype=torch.float64)
    with SyncRecorder() as recorder:
        running += torch.stack([running[0], running[1], running.new_tensor(32)])  # the old count update
        bool(torch.isfinite(running).all())  # a NaN check that waits for the GPU
    assert recorder.calls == ["new_tensor", "__bool__"]


def test_skip_batch_nan_policy_syncs_by_design(tmp_path, idx_root):
    t = _trainer(tmp_path, idx_root, nan_policy="skip_batch")
    inputs, targets = next(t.data.train.epoch(0))
    with SyncRecorder() as recorder:
        train_step(t, inputs, targets, optimizer_step=True)
    assert recorder.calls == ["item"]  # every loss is read: the README lists this setting as syncing


def test_running_mean_loads_checkpoints_that_stored_the_count_on_the_device():
    old_format = {"sums": torch.tensor([12.0, 5.0, 8.0], dtype=torch.float64)}  # loss * n, correct, n
    running = RunningMean(CPU, build_task(build_config({}).task, 10))
    running.load_state_dict(old_format)
    assert running.compute() == {"loss": 1.5, "acc": 0.625}
    assert torch.equal(running.state_dict()["sums"][:3], old_format["sums"])


def test_batch_size_probe_runs_the_real_step_with_adamw_and_treats_alloc_failures_as_not_fitting(
        tmp_path, idx_root, monkeypatch):
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    cfg = build_config(tiny_config(tmp_path, idx_root, optim={"name": "adamw", "lr": 1e-3}))
    data = build_data(cfg.data, DataRequest(seed=0, device=CPU, splits=("train",)))
    sample, targets = next(data.train.epoch(0))
    built = []

    def build():
        model = prepare_model(cfg.model, data.info, CPU, channels_last=False)
        built.append(build_optimizer(cfg.optim, model, CPU))
        return model, TrainStep(cfg.trainer, build_task(cfg.task, 10), built[-1], CPU, "32")

    assert cuda_probe(build, sample, targets, CPU)(48)  # the old probe raised: AdamW rejects its own defaults
    assert isinstance(built[-1], torch.optim.AdamW) and built[-1].state  # it really stepped

    def alloc_failure(message):
        def build_failing():
            model, step = build()
            step.__class__ = type("Failing", (TrainStep,), {
                "__call__": lambda self, *a, **k: (_ for _ in ()).throw(RuntimeError(message))})
            return model, step
        return cuda_probe(build_failing, sample, targets, CPU)

    assert not alloc_failure("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")(48)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        alloc_failure("shape mismatch")(48)  # a real bug is not "does not fit"
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has `count` CUDA devices (only the device arithmetic is under test)."""
    def set_count(count: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return set_count


def test_ddp_ranks_take_their_local_rank_gpu(gpus):
    gpus(2)
    assert [device_mod.resolve_device(name, rank, 2) for name in ("cuda", "auto") for rank in (0, 1)] == \
        [torch.device("cuda", 0), torch.device("cuda", 1)] * 2
    assert device_mod.resolve_device("cuda") == torch.device("cuda", 0)  # one process: an index DDP can use


def test_ddp_gpu_layouts_that_cannot_work_are_refused_before_launch(gpus):
    gpus(1)
    with pytest.raises(KilnError, match="NCCL needs one GPU per process"):
        device_mod.resolve_device("auto", 1, 2)
    with pytest.raises(KilnError, match="names one GPU"):
        device_mod.resolve_device("cuda:0", 0, 2)
    # gloo lets ranks share the one GPU
    assert {device_mod.resolve_device("cuda", r, 3, "gloo") for r in range(3)} == {torch.device("cuda", 0)}
    with pytest.raises(KilnError, match="needs CUDA"):
        device_mod.resolve_backend("nccl", CPU)


def test_nproc_with_an_explicit_gpu_exits_2_before_starting_processes(config_file):
    out = subprocess.run([sys.executable, "-m", "kiln", "train", str(config_file), "trainer.device=cuda:0",
                          "--nproc", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "kiln: error" in out.stderr and "Traceback" not in out.stderr


def test_auto_precision_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    for capability, expected in (((7, 5), "16"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, c=capability: c)
        assert device_mod.resolve_precision("auto", gpu) == expected
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (7, 0))
    assert device_mod.resolve_precision("bf16", gpu) == "16"  # emulated bf16 is slow: fp16 with the scaler
    assert device_mod.resolve_precision("auto", CPU) == "32"


def test_resuming_with_a_scaler_from_a_checkpoint_without_one_warns_instead_of_crashing(caplog):
    cfg = build_config({})
    step = TrainStep(cfg.trainer, build_task(cfg.task, 10), torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                     CPU, "16")
    assert step.scaler.is_enabled()
    owner = types.SimpleNamespace(step=step, precision="16")
    Trainer._load_scaler(owner, {})  # GradScaler.load_state_dict({}) raises
    assert "another precision" in caplog.text
    saved = step.scaler.state_dict()
    Trainer._load_scaler(owner, saved)
    assert step.scaler.state_dict()["scale"] == saved["scale"]


def test_deterministic_mode_is_switched_off_for_a_later_run():
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_gru_recurrence_runs_in_fp32_under_autocast():
    from kiln.data.text import pad_collate
    from kiln.models.text import gru

    model = gru(vocab_size=50, num_classes=4, embed_dim=16, hidden=8)
    dtypes = []
    model.gru.register_forward_hook(lambda m, i, o: dtypes.append(o[1].dtype))
    batch = pad_collate([torch.randint(1, 50, (n,)) for n in (5, 3, 7)], pad_id=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch).float().sum().backward()
    assert dtypes == [torch.float32]


def test_doctor_prints_na_for_nvml_queries_a_gpu_does_not_support(monkeypatch):
    from kiln.commands import doctor

    class NVMLError(Exception):
        pass

    def unsupported(*a):
        raise NVMLError("Not Supported")

    memory = types.SimpleNamespace(used=2**30, total=80 * 2**30)
    fake = types.SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: object(), nvmlDeviceGetName=lambda h: b"NVIDIA A100 MIG 1g.10gb",
        nvmlDeviceGetMemoryInfo=lambda h: memory, nvmlDeviceGetUtilizationRates=unsupported,
        nvmlDeviceGetComputeRunningProcesses=unsupported)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus, note = doctor.gpus()
    assert note is None
    assert gpus == [{"index": 0, "name": "NVIDIA A100 MIG 1g.10gb", "memory_used_mib": 1024,
                     "memory_total_mib": 81920, "utilization_pct": "n/a", "processes": "n/a"}]


def test_tune_workers_get_gpus_from_the_visible_list():
    assert visible_gpus("3,5", 2) == ["3", "5"]
    assert visible_gpus(None, 2) == ["0", "1"]
    assert visible_gpus("GPU-1a2b, GPU-3c4d", 2) == ["GPU-1a2b", "GPU-3c4d"]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_and_skips_the_cuda_only_ones(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "check"),
                          "--cpu-dry-run"], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHON": sys.executable})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = (tmp_path / "check" / "results.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in table.splitlines()
            if line.startswith("| ") and " | " in line and not line.startswith("| check")}
    assert rows["train bf16 (clip, accumulate)"] == "PASS" and rows["deterministic resume bit-exact"] == "PASS"
    assert rows["sync-free training step"] == "SKIP" and rows["speed benchmark"] == "SKIP"
    assert set(rows.values()) == {"PASS", "SKIP"}, table
    assert sum(v == "PASS" for v in rows.values()) >= 12
