"""Exact resume: an interrupted-and-resumed run ends bit-identical to an uninterrupted one."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import only_run, tiny_config, write_config
from kiln.config import build_config
from kiln.core.errors import KilnError, TrainingInterrupted
from kiln.core.state import load_checkpoint
from kiln.train import session
from kiln.train.callbacks import LambdaCallback


def _measured(key):  # timings and memory differ between any two runs
    return key.startswith(("time/", "mem/"))


def _cfg(tmp_path, idx_root, folder, loader="auto"):
    raw = tiny_config(tmp_path, idx_root, data={"loader": loader},
                      task={"label_smoothing": 0.1},
                      trainer={"epochs": 3, "accumulate": 2, "log_every_n_steps": 3,
                               "early_stopping": {"enabled": True, "monitor": "val/loss", "patience": 10}},
                      log={"dir": str(tmp_path / folder), "progress": "none", "tensorboard": False})
    return build_config(raw)


def _rows(run: Path):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not _measured(k)} for r in rows]


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0  # every parameter's state, not just the common ones
    for p in sa:
        assert sa[p].keys() == sb[p].keys()
        for key in sa[p]:
            assert torch.equal(torch.as_tensor(sa[p][key]), torch.as_tensor(sb[p][key])), key
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["schedule"] == b["schedule"] and a["scaler"] == b["scaler"]
    assert torch.equal(a["running"]["sums"], b["running"]["sums"])
    assert a["loop"] == b["loop"] and a["early_stopping"] == b["early_stopping"]
    assert a["checkpoint"] == b["checkpoint"]
    assert a["rng"]["python"] == b["rng"]["python"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"])
    assert a["rng"]["numpy"]["pos"] == b["rng"]["numpy"]["pos"]


# mid epoch 1, end of epoch 1 (before validation), mid epoch 2; with both batch sources
@pytest.mark.parametrize("stop_at_step, loader", [(2, "resident"), (6, "resident"), (8, "resident"),
                                                  (8, "dataloader")])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, idx_root, stop_at_step, loader):
    full = session.train(_cfg(tmp_path, idx_root, "full", loader), quiet=True)

    def stop(trainer):
        if trainer.state.step == stop_at_step:
            trainer.stop_requested = True  # what the SIGINT/SIGTERM handler does

    cfg = _cfg(tmp_path, idx_root, "cut", loader)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        session.train(cfg, quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    run = only_run(tmp_path / "cut")
    cut = load_checkpoint(run / "checkpoints" / "last.pt")
    assert cut["loop"]["step"] == stop_at_step and not cut["loop"]["finished"]
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"

    resumed = session.train(cfg, resume=run, quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    _assert_same_state(a, b)
    assert _rows(full.run_dir) == _rows(resumed.run_dir)
    assert full.test_metrics["acc"] == resumed.test_metrics["acc"]
    best_a = load_checkpoint(full.run_dir / "checkpoints" / "best.pt")["model"]
    best_b = load_checkpoint(resumed.run_dir / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_resuming_a_finished_run_is_refused_and_changes_nothing(tmp_path, idx_root):
    cfg = _cfg(tmp_path, idx_root, "done").with_values({"trainer.epochs": 1})
    result = session.train(cfg, quiet=True)
    last = result.run_dir / "checkpoints" / "last.pt"
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    with pytest.raises(KilnError, match=r"already finished all 1 epochs.*trainer.epochs=N"):
        session.train(cfg, resume=result.run_dir, quiet=True)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest
    cfg = cfg.with_values({"trainer.epochs": 2})  # training longer is allowed
    longer = session.train(cfg, resume=result.run_dir, quiet=True)
    assert load_checkpoint(longer.run_dir / "checkpoints" / "last.pt")["loop"]["epoch"] == 2


def test_sigterm_saves_last_and_resume_auto_finishes(tmp_path, idx_root, capsys):
    from kiln.cli import main

    # Short epochs (two batches): the signal lands mid-run, and the resume's 39 epochs take seconds.
    raw = tiny_config(tmp_path, idx_root, trainer={"epochs": 40, "test_after_fit": False, "limit_train_batches": 2,
                                                   "limit_val_batches": 1})
    path = write_config(tmp_path, raw)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, "-m", "kiln", "train", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first epoch is done
        runs = list((tmp_path / "runs").glob("*/*/metrics.jsonl"))
        if runs and runs[0].read_text().strip():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    run = only_run(tmp_path / "runs")
    assert f"kiln train --resume {run}" in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 1 <= state["loop"]["epoch"] < 40 and not state["loop"]["finished"]
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"

    assert main(["train", str(path), "--resume", "auto"]) == 0  # in process: the signal's part ran the real CLI
    assert f"run folder: {run}" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["epoch"] == 40
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 41))  # no epoch logged twice


def test_a_run_killed_after_its_last_epoch_finishes_its_test_on_resume(tmp_path, idx_root):
    from kiln.cli import main
    from kiln.runs import RunDir

    cfg = _cfg(tmp_path, idx_root, "end").with_values({"trainer.epochs": 1})
    run = RunDir(session.train(cfg, quiet=True).run_dir)
    run.test_metrics_file.unlink()  # what a kill between the last epoch and the test leaves
    run.write_status("running", epoch=1)
    assert main(["train", "--resume", str(run), "log.progress=none"]) == 0
    assert run.test_metrics()["num_samples"] == 160 and run.status()["state"] == "finished"
    assert main(["train", "--resume", str(run)]) == 2  # now there is nothing left to do


def test_a_run_killed_before_its_first_checkpoint_starts_over_on_resume(tmp_path, idx_root):
    from kiln.cli import main
    from kiln.runs import RunDir

    cfg = _cfg(tmp_path, idx_root, "start").with_values({"trainer.epochs": 2})
    run = RunDir(session.train(cfg, quiet=True).run_dir)
    shutil.rmtree(run.checkpoints)  # as if killed during the first epoch (its metrics row may exist)
    run.metrics_jsonl.write_text(run.metrics_jsonl.read_text().splitlines()[0] + "\n")
    assert main(["train", "--resume", str(run), "log.progress=none"]) == 0
    assert [r["epoch"] for r in _rows(run.path)] == [1, 2] and run.status()["state"] == "finished"
    assert load_checkpoint(run.last)["loop"]["epoch"] == 2


def test_a_full_disk_stops_training_with_the_path_and_resume_works_afterwards(tmp_path, idx_root, monkeypatch):
    import errno

    from kiln.core.errors import TrainingStopped

    cfg = _cfg(tmp_path, idx_root, "disk")
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # the second checkpoint write finds the disk full
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(TrainingStopped, match=r"cannot write .*last\.pt: No space left on device.*--resume"):
        session.train(cfg, quiet=True)
    monkeypatch.undo()
    run = only_run(tmp_path / "disk")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["epoch"] == 1  # the previous one, intact
    assert not list((run / "checkpoints").glob(".*.tmp"))
    resumed = session.train(cfg, resume=run, quiet=True)
    assert load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["loop"]["epoch"] == 3


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_bit_identical(tmp_path):
    """benchmarks/kill_resume.py, small: 3 chained SIGKILLs (the README's figure uses 20)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from kill_resume import chain

    result = chain(tmp_path, kills=3, seed=1, train=1500, epochs=3)
    assert result["kills"] >= 2 and result["identical"], result
