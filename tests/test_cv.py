"""kiln cv: folds that cover the training split once, validation never from the held-out fold, resume after a
kill, the test-split ensemble."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config, write_config
from kiln.cli import main
from kiln.commands.cv import run_cv
from kiln.config import DataConfig, build_config
from kiln.core.errors import KilnError, TrainingInterrupted
from kiln.data import cv_folds, train_val_split
from kiln.train import session
from kiln.train.callbacks import LambdaCallback


def test_folds_are_stratified_disjoint_and_validation_stays_out_of_the_held_out_fold():
    labels = torch.arange(60) % 3
    held = []
    for k in range(1, 4):
        cfg = DataConfig(val_split=6, cv={"folds": 3, "fold": k})
        rest, out = cv_folds(60, cfg, labels)
        assert set(torch.bincount(labels[out]).tolist()) <= {6, 7}  # each class split evenly (20 = 7 + 7 + 6)
        train, val = train_val_split(60, cfg, labels=labels)
        assert not set(val.tolist()) & set(out.tolist()) and not set(train.tolist()) & set(out.tolist())
        assert len(train) + len(val) == len(rest)
        held += out.tolist()
    assert sorted(held) == list(range(60))  # every sample held out exactly once
    with pytest.raises(KilnError, match="--folds 30 is more than the smallest class has samples"):
        cv_folds(60, DataConfig(cv={"folds": 30, "fold": 1}), labels)


def test_cv_runs_every_fold_resumes_after_a_kill_and_tests_the_ensemble(tmp_path, idx_root, monkeypatch, capsys):
    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 2},
                                   log={"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}))
    real_train, calls = session.train, []

    def killed_in_fold_2(fold_cfg, **kwargs):
        calls.append(fold_cfg.data.cv.fold)
        if fold_cfg.data.cv.fold == 2 and calls.count(2) == 1:
            def stop(t):
                if t.state.step == 10:  # epoch 2 of fold 2 (7 steps per epoch)
                    t.stop_requested = True
            kwargs["callbacks"] = [LambdaCallback(on_step_end=stop)]
        return real_train(fold_cfg, **kwargs)

    monkeypatch.setattr(session, "train", killed_in_fold_2)
    with pytest.raises(TrainingInterrupted):
        run_cv(cfg, 3)
    folder = next((tmp_path / "runs" / "tiny").glob("cv-*"))
    first = json.loads((folder / "fold-1" / "test_metrics.json").read_text())
    assert main(["cv", "--resume", str(folder), "--test"]) == 0
    assert calls == [1, 2, 2, 3]  # fold 1 not trained again; fold 2 resumed; fold 3 trained
    out = capsys.readouterr().out
    assert "mean" in out and "their ensemble" in out
    summary = json.loads((folder / "cv.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [1, 2, 3] and summary["folds"][0]["acc"] == first["acc"]
    assert sum(f["num_samples"] for f in summary["folds"]) == 480  # the whole training split, once
    assert 0 <= summary["test"]["ensemble_acc"] <= 1 and len(summary["test"]["acc_per_fold"]) == 3


def test_cv_config_path_and_a_bad_fold_count(tmp_path, idx_root, capsys):
    config = write_config(tmp_path, tiny_config(tmp_path, idx_root, data={"classes": [0, 1]}))
    assert main(["cv", str(config), "--folds", "1"]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err


def test_status_json_follows_each_fold_epoch_by_epoch(tmp_path, idx_root, monkeypatch):
    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 3},
                                   log={"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}))
    real_train, seen = session.train, []

    def reading_status(fold_cfg, **kwargs):  # the caller's callbacks run after kiln's: status.json is written by then
        def read(epoch, metrics):
            status = json.loads((kwargs["run_dir"] / "status.json").read_text())
            seen.append((fold_cfg.data.cv.fold, epoch, status["state"], status["epoch"]))
        return real_train(fold_cfg, **kwargs, callbacks=[LambdaCallback(on_epoch_end=read)])

    monkeypatch.setattr(session, "train", reading_status)
    run_cv(cfg, 2)
    assert seen == [(fold, epoch, "running", epoch) for fold in (1, 2) for epoch in (1, 2, 3)]
    folder = next((tmp_path / "runs" / "tiny").glob("cv-*"))
    final = json.loads((folder / "fold-2" / "status.json").read_text())
    assert final["state"] == "finished" and final["epoch"] == 3 and final["parameters"] > 0
