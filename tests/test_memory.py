"""Out-of-memory handling, the memory-growth warning, the batch-size search and lr-find."""

import json
import logging

import pytest
import torch

from conftest import only_run, run_cli, tiny_config
from kiln.config import build_config
from kiln.core.errors import TrainingStopped
from kiln.core.state import load_checkpoint
from kiln.data import DataRequest, build_data
from kiln.models import build_model
from kiln.train import session
from kiln.train.batch_size import search
from kiln.train.callbacks import LambdaCallback
from kiln.train.callbacks.memory_watch import GrowthWatch
from kiln.train.lr_find import Span, sweep
from kiln.train.memory import model_memory
from kiln.train.optim import build_optimizer


def test_out_of_memory_names_the_phase_and_keeps_last_pt(tmp_path, idx_root):
    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 3}))

    def run_out_of_memory(t):
        if t.state.epoch == 1 and t.state.batch == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    with pytest.raises(TrainingStopped) as e:
        session.train(cfg, quiet=True, callbacks=[LambdaCallback(on_step_end=run_out_of_memory)])
    message = str(e.value)
    assert "out of memory in the training step" in message and "data.batch_size=16 trainer.accumulate=2" in message
    assert "--find-batch-size" in message and "parameters 0 MiB, gradients 0 MiB, optimizer state 0 MiB" in message
    run = only_run(tmp_path / "runs")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["epoch"] == 1
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"


def test_the_memory_the_model_holds_is_split_by_category():
    from kiln.train.memory import out_of_memory_message

    model = torch.nn.Linear(1024, 1024)  # 1 M parameters: 4 MiB in fp32
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(8, 1024)).sum().backward()
    optimizer.step()
    held = model_memory(model, optimizer)
    assert held["mem/params_mib"] == pytest.approx(4.0, abs=0.01) and held["mem/grads_mib"] == pytest.approx(4.0, abs=0.01)
    assert held["mem/optimizer_mib"] == pytest.approx(8.0, abs=0.02)  # AdamW: two moments (and a step count)
    message = out_of_memory_message("training step", torch.device("cpu"), 64, model, optimizer, accumulate=2)
    assert "data.batch_size=32 trainer.accumulate=4" in message and "trainer.strategy=fsdp" in message


def test_memory_line_and_growth_warning(tmp_path, idx_root, caplog):
    # The leaky run gets a fresh process: in a long test session the allocator may hand the leak memory that
    # earlier tests freed, and the process's RSS would not show it.
    from conftest import write_config

    leaky = write_config(tmp_path, tiny_config(tmp_path, idx_root, model={"name": "leakmodel:Leaky"},
                                               trainer={"epochs": 5, "test_after_fit": False},
                                               log={"dir": str(tmp_path / "leaky"), "progress": "none"}))
    out = run_cli("train", leaky)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "host memory (RSS) grew at each of the last 3 epochs" in out.stderr and "loss.item()" in out.stderr
    rows = [json.loads(line) for line in (only_run(tmp_path / "leaky") / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["mem/host_rss_mib"] - rows[0]["mem/host_rss_mib"] > 60
    logger = logging.getLogger("kiln")
    logger.addHandler(caplog.handler)
    try:
        clean = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 5, "test_after_fit": False},
                                         log={"dir": str(tmp_path / "clean"), "progress": "none"}))
        with caplog.at_level(logging.WARNING, logger="kiln"):
            session.train(clean, quiet=True)
        assert "grew at each" not in caplog.text
    finally:
        logger.removeHandler(caplog.handler)


def test_growth_watch_rules():
    watch = GrowthWatch(window=3, min_step=2, min_total=20)
    assert [watch.update({"mem/host_rss_mib": v}) for v in (100, 101, 100, 102, 101)] == [None] * 5  # noise
    watch = GrowthWatch(window=3, min_step=2, min_total=20)
    messages = [watch.update({"mem/host_rss_mib": v}) for v in (100, 110, 120, 130, 140)]
    assert messages[:3] == [None] * 3 and "grew at each of the last 3 epochs" in messages[3] and messages[4] is None


def test_a_few_mib_an_epoch_on_a_large_process_is_noise_and_a_leak_is_not():
    watch = GrowthWatch()  # kiln's defaults
    assert all(watch.update({"mem/host_rss_mib": v}) is None for v in (2000, 2008, 2016, 2024, 2032, 2040))
    watch = GrowthWatch()  # 3 MiB an epoch on a small process: still noise
    assert all(watch.update({"mem/host_rss_mib": v}) is None for v in (400, 403, 406, 409, 412))
    watch = GrowthWatch()  # a leak of 24 MiB an epoch (tests/leakmodel.py on the tiny data)
    messages = [watch.update({"mem/host_rss_mib": v}) for v in (600, 624, 648, 672)]
    assert messages[:3] == [None] * 3 and "grew at each of the last 3 epochs" in messages[3]


@pytest.mark.parametrize("threshold", [1, 7, 256, 700, 5000])
def test_batch_size_search_finds_the_largest_that_fits(threshold):
    probes = []

    def fits(n):
        probes.append(n)
        return n <= threshold

    assert search(fits, start=32, limit=4096) == min(threshold, 4096)
    assert len(probes) < 30


def test_find_batch_size_needs_cuda(config_file, cli):
    result = cli("train", config_file, "--find-batch-size")
    if torch.cuda.is_available():
        assert result.returncode == 0 and "largest batch size that fits" in result.stdout
    else:
        assert result.returncode == 2 and "needs a CUDA device" in result.stderr


def test_lr_find_suggests_within_the_sweep_and_restores_the_model(tmp_path, idx_root):
    cfg = build_config(tiny_config(tmp_path, idx_root))
    data = build_data(cfg.data, DataRequest(seed=0, device=torch.device("cpu"), splits=("train",)))
    model = build_model(cfg.model, data.info)
    optimizer = build_optimizer(cfg.optim, model, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = sweep(model, optimizer, data.train, device=torch.device("cpu"), span=Span(1e-5, 10, 40))
    assert 1e-5 <= result.suggestion <= 10 and len(result.lrs) == len(result.losses) >= 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"] == {}


def test_lr_find_cli_writes_the_plot(tmp_path, config_file, cli):
    result = cli("lr-find", config_file, "--steps", "30")
    assert result.returncode == 0, result.stderr
    assert "suggested learning rate" in result.stdout
    folder = next((tmp_path / "runs" / "tiny").glob("lr-find-*"))
    assert (folder / "lr_find.png").stat().st_size > 5000
    assert json.loads((folder / "lr_find.json").read_text())["suggestion"] > 0
