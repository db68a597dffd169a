"""Why is it slow: the share of each epoch spent waiting for data (always on), and kiln train --profile's phases,
trace and bottleneck."""

from __future__ import annotations

import gzip
import json

from conftest import tiny_config, write_config


def test_profile_only_measures_the_phases_writes_a_trace_and_stops(tmp_path, idx_root, cli):
    config = write_config(tmp_path, tiny_config(tmp_path, idx_root))
    out = cli("train", config, "--profile-only", "trainer.profile.wait=1", "trainer.profile.warmup=1",
              "trainer.profile.steps=4", "--run-dir", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    profile = json.loads((tmp_path / "run" / "profile.json").read_text())
    assert profile["steps"] == 4 and set(profile["phases_ms"]) == {"data", "forward", "backward", "optimizer", "other"}
    assert profile["phases_ms"]["forward"] > 0 and profile["phases_ms"]["backward"] > 0
    assert sum(profile["shares"].values()) <= 1.05 and profile["bottleneck"]
    trace = json.loads(gzip.open(tmp_path / "run" / "profile" / "trace.json.gz").read())
    assert {"kiln.forward", "kiln.backward", "kiln.data"} <= {e.get("name") for e in trace["traceEvents"]}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(rows) == 1 and rows[0]["step"] == 6  # stopped right after the profiled steps
    assert not (tmp_path / "run" / "test_metrics.json").exists()


def test_a_profile_longer_than_the_run_says_nothing_was_measured(tmp_path, idx_root, cli):
    config = write_config(tmp_path, tiny_config(tmp_path, idx_root, trainer={"epochs": 1}))
    out = cli("train", config, "--profile", "--run-dir", tmp_path / "run")
    assert out.returncode == 0 and "nothing was measured" in out.stderr
    assert not (tmp_path / "run" / "profile.json").exists()


def test_waiting_for_data_is_logged_every_epoch_and_named_with_its_fix(tmp_path, idx_root, cli):
    cfg = tiny_config(tmp_path, idx_root, data={"name": "userdata:SlowBlobs", "batch_size": 16, "loader": "dataloader"},
                      model={"name": "userdata:TinyNet"}, trainer={"epochs": 2})
    out = cli("train", write_config(tmp_path, cfg), "--profile", "trainer.profile.wait=1", "trainer.profile.warmup=0",
              "trainer.profile.steps=3", "--run-dir", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(row["time/data_wait"] > 0.3 for row in rows)
    assert out.stderr.count("waited for data") == 1 and "data.num_workers=" in out.stderr  # warned once
    assert "data " in (tmp_path / "run" / "train.log").read_text().split("epoch 1/2")[1].splitlines()[0]
    profile = json.loads((tmp_path / "run" / "profile.json").read_text())
    assert profile["shares"]["data"] > 0.3 and "waits for data" in profile["bottleneck"]


def test_the_bottleneck_rules_name_syncs_and_an_idle_gpu_before_the_model():
    from types import SimpleNamespace

    import torch

    from kiln.train.callbacks.profile import bottleneck

    gpu = SimpleNamespace(device=torch.device("cuda"), data=None)
    shares = {"data": 0.05, "forward": 0.3, "backward": 0.5, "optimizer": 0.05}
    syncing = {"shares": shares, "host_syncs_per_step": 2.0, "gpu_busy": 0.9}
    assert "2 host syncs per step" in bottleneck(syncing, gpu, 0)
    idle = {"shares": shares, "host_syncs_per_step": 0.0, "gpu_busy": 0.3}
    assert "trainer.compile=true" in bottleneck(idle, gpu, 0)
    busy = {"shares": shares, "host_syncs_per_step": 0.0, "gpu_busy": 0.95}
    assert "the model's own work" in bottleneck(busy, gpu, 0) and "bf16" in bottleneck(busy, gpu, 0)
