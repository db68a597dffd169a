"""kiln average: the mean of a run's kept epoch checkpoints, BatchNorm measured again, used like any checkpoint."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import tiny_config, write_config
from kiln.core.state import load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory, idx_root):
    from kiln.cli import main

    tmp = tmp_path_factory.mktemp("average")
    cfg = tiny_config(tmp, idx_root, trainer={"epochs": 4, "checkpoint": {"keep_last_k": 3}})
    assert main(["train", str(write_config(tmp, cfg)), "--run-dir", str(tmp / "run")]) == 0
    return tmp / "run"


def test_keep_last_k_keeps_the_last_epochs(run):
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*")) == \
        ["epoch-002.pt", "epoch-003.pt", "epoch-004.pt"]


def test_an_average_of_identical_checkpoints_equals_the_checkpoint(run, tmp_path, cli):
    copy = tmp_path / "same"
    shutil.copytree(run, copy)
    for name in ("epoch-002.pt", "epoch-003.pt"):
        shutil.copy(copy / "checkpoints" / "epoch-004.pt", copy / "checkpoints" / name)
    out = cli("average", copy, "--last", "3", "--no-bn-update")
    assert out.returncode == 0, out.stderr
    a = load_checkpoint(copy / "checkpoints" / "averaged.pt")["model"]
    b = load_checkpoint(copy / "checkpoints" / "epoch-004.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_average_is_the_mean_of_the_epochs_with_batchnorm_measured_again(run, tmp_path, cli):
    out = cli("average", run, "--last", "2", "--out", tmp_path / "avg.pt")
    assert out.returncode == 0, out.stderr
    avg = load_checkpoint(tmp_path / "avg.pt")["model"]
    three, four = (load_checkpoint(run / "checkpoints" / f"epoch-00{e}.pt")["model"] for e in (3, 4))
    weights = [k for k in avg if "running" not in k and avg[k].is_floating_point()]
    assert all(torch.allclose(avg[k], (three[k] + four[k]) / 2, atol=1e-6) for k in weights)
    stats = [k for k in avg if k.endswith("running_mean")]
    assert stats, "the tiny CNN has BatchNorm"
    assert not all(torch.allclose(avg[k], (three[k] + four[k]) / 2) for k in stats)  # measured, not averaged
    assert cli("test", run, "--checkpoint", str(tmp_path / "avg.pt"), "--out", tmp_path / "m.json").returncode == 0


def test_the_averaged_checkpoint_is_tested_and_predicted_by_name(run, cli):
    assert cli("average", run, "--top-k", "2").returncode == 0
    out = cli("test", run, "--checkpoint", "averaged", "--out", run / "averaged.json")
    assert out.returncode == 0 and "averaged.pt" in out.stdout


def test_too_few_kept_epochs_is_a_clear_error(run, cli):
    out = cli("average", run, "--last", "5")
    assert out.returncode == 2 and "keeps 3 epoch checkpoints" in out.stderr and "keep_last_k=5" in out.stderr
