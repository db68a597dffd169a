"""DistributedDataParallel on CPU (gloo) with real torchrun processes."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import only_run, run_cli, tiny_config, write_config
from kiln.config import build_config, task_config
from kiln.core.state import load_checkpoint
from kiln.data import DataRequest, build_data
from kiln.tasks import build_task
from kiln.train.loop import evaluate

TESTS = Path(__file__).parent


def torchrun(*args, nproc=2, timeout=240, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "kiln",
           *map(str, args)]
    env = {**__import__("os").environ, **(env or {}), "PYTHONPATH": str(TESTS)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def plain_cfg(tmp_path, idx_root, folder, batch_size, **trainer):
    """No batch norm, dropout or augmentation: 2 x B and 1 x 2B must train the same weights."""
    return tiny_config(tmp_path, idx_root, data={"batch_size": batch_size, "augment": {"crop_padding": 0, "hflip": False}},
                       model={"name": "cnn", "args": {"channels": [8, 16], "batch_norm": False, "dropout": 0.0}},
                       optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}, schedule={"name": "none"},
                       trainer={"epochs": 2, **trainer},
                       log={"dir": str(tmp_path / folder), "progress": "none", "tensorboard": False})


def test_two_processes_equal_one_with_twice_the_batch(tmp_path, idx_root, cli):
    """With task.class_weights: auto as well: every rank weighs the loss by the whole training split's counts."""
    weighted = {"task": {"class_weights": "auto"}}
    one = cli("train", write_config(tmp_path, plain_cfg(tmp_path, idx_root, "one", 32) | weighted, "one.yaml"))
    assert one.returncode == 0, one.stderr
    two = torchrun("train", write_config(tmp_path, plain_cfg(tmp_path, idx_root, "two", 16) | weighted, "two.yaml"))
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("run folder:") == 1  # only rank 0 reports
    assert two.stderr.count("task.class_weights=auto") == 1  # rank 0 logs
    a = load_checkpoint(only_run(tmp_path / "one") / "checkpoints" / "last.pt")
    run = only_run(tmp_path / "two")
    b = load_checkpoint(run / "checkpoints" / "last.pt")
    assert b["world_size"] == 2 and b["global_batch_size"] == 32 and a["loop"]["step"] == b["loop"]["step"] == 24
    for name in a["model"]:
        assert torch.allclose(a["model"][name], b["model"][name], atol=1e-5), name

    # rank-0-only outputs exist once
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["world_size"] == 2 and status["global_batch_size"] == 32

    # validation metrics of the sharded evaluation equal a single-process evaluation of the same weights
    cfg = build_config(plain_cfg(tmp_path, idx_root, "two", 16))
    data = build_data(cfg.data, DataRequest(seed=cfg.seed, device=torch.device("cpu"), splits=("val",)))
    from kiln.models import build_model

    model = build_model(cfg.model, data.info)
    model.load_state_dict(b["model"])
    single = evaluate(model, data.val, build_task(task_config(), 10), device=torch.device("cpu"), precision="32")
    assert single["acc"] == pytest.approx(rows[-1]["val/acc"], abs=1e-9)
    assert single["loss"] == pytest.approx(rows[-1]["val/loss"], rel=1e-6)


def test_nproc_launches_the_same_through_the_elastic_agent(tmp_path, config_file):
    result = run_cli("train", config_file, "trainer.epochs=1", "--nproc", "2")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "status.json").read_text())["world_size"] == 2
    assert (run / "test_metrics.json").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 1


def _crash_cfg(tmp_path, idx_root):
    return write_config(tmp_path, tiny_config(tmp_path, idx_root, model={"name": "crashmodel:CrashOnRank1",
                                                                         "args": {"after": 8}},  # in epoch 2 of 6 batches
                                              trainer={"epochs": 3}))


def test_a_crashed_worker_stops_the_group_with_its_error(tmp_path, idx_root, capsys):
    from kiln.cli import main

    result = run_cli("train", _crash_cfg(tmp_path, idx_root), "--nproc", "2", timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "worker crashed on purpose" in result.stderr and "rank 1 exited with code 1" in result.stderr
    run = only_run(tmp_path / "runs")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["epoch"] == 1  # the epoch before the crash

    # ... and the 2-process run resumes as a 1-process run (in process)
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming a 2-process run with 1 processes" in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["loop"]["epoch"] == 3 and state["world_size"] == 1


def test_a_stalled_rank_ends_the_group_with_a_report_naming_it(tmp_path, idx_root):
    # dist_timeout 12 s, not less: a loaded CI machine took 5 s to import torchmetrics at the first validation,
    # which the watch rightly counts as no progress
    cfg = tiny_config(tmp_path, idx_root, model={"name": "hangmodel:HangOnRank1", "args": {"after": 8}},
                      trainer={"epochs": 3, "dist_timeout": 12})
    began = time.monotonic()
    result = run_cli("train", write_config(tmp_path, cfg), "--nproc", "2", timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert time.monotonic() - began < 12 + 30 + 30  # the timeout + 30 s, plus the two processes' start-up
    message = result.stderr[result.stderr.index("kiln: distributed training hung"):]
    assert "rank 1 did not arrive at backward (the gradient all-reduce)" in message
    assert "rank 1 was at" in message and "hangmodel.py" in message and "in forward" in message
    assert "last.pt is intact" in message and "kiln train --resume" in message
    run = only_run(tmp_path / "runs")
    stacks = (run / "hang-rank1.txt").read_text()
    assert "time.sleep" in stacks or "forward" in stacks  # every thread's Python stack, from faulthandler
    assert (run / "hang-rank0.txt").is_file()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["epoch"] == 1  # the epoch before the hang


@pytest.mark.slow
def test_max_restarts_resumes_from_last_checkpoint(tmp_path, idx_root):
    result = run_cli("train", _crash_cfg(tmp_path, idx_root), "--nproc", "2", "--max-restarts", "1", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path / "runs")
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3] and "resumed from" in (run / "train.log").read_text()


def test_ranks_that_disagree_on_the_config_fail_clearly():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    sys.path.insert(0, str(TESTS))
    from dist_helpers import check_configs

    mp.start_processes(check_configs, args=(2, port, results), nprocs=2, start_method="spawn")
    messages = dict(results.get(timeout=60) for _ in range(2))
    assert all("ranks disagree on the config: ranks [1] differ from rank 0" in m for m in messages.values())


def test_gather_samples_undoes_the_round_robin_deal_of_evaluation_shards(monkeypatch):
    from kiln.core import dist
    from kiln.data.loaders import EpochBatchSampler

    n, world = 11, 3
    shards = [EpochBatchSampler(n, 4, shuffle=False, drop_last=False, seed=0, rank=r, world_size=world).order(0).tolist()
              for r in range(world)]
    monkeypatch.setattr(dist, "gather", lambda items: shards)  # every rank's shard, as all_gather_object gives them
    assert dist.gather_samples(shards[0]) == list(range(n))
