"""Callbacks and training controls that had no test of their own: early stopping (and its resumed patience),
keep_top_k rotation, gradient clipping, accumulation, limit_*/overfit_batches, the report's mistakes."""

import json

import pytest
import torch

from conftest import tiny_config
from kiln.config import CheckpointConfig, EarlyStoppingConfig, build_config
from kiln.core.checkpoint import Checkpoint, LoopState, read_checkpoint
from kiln.core.state import load_checkpoint
from kiln.runs import RunDir
from kiln.train import session
from kiln.train.callbacks import EarlyStopping, ModelCheckpoint


class FakeTrainer:
    stop_training = False
    saves_shards = False  # one process: checkpoint files

    def checkpoint(self):
        return Checkpoint(model={"w": torch.zeros(1)})


def _epochs(run) -> list[dict]:
    return [json.loads(line) for line in RunDir(run).metrics_jsonl.read_text().splitlines()]


def test_early_stopping_stops_after_patience_epochs_and_resumes_its_counter():
    cb = EarlyStopping(EarlyStoppingConfig(enabled=True, monitor="val/loss", mode="min", patience=2))
    t = FakeTrainer()
    for epoch, loss in enumerate([1.0, 0.8, 0.9], start=1):
        cb.on_epoch_end(t, epoch, {"val/loss": loss})
    assert not t.stop_training and cb.wait == 1
    resumed = EarlyStopping(EarlyStoppingConfig(enabled=True, monitor="val/loss", mode="min", patience=2))
    resumed.load_state_dict(cb.state_dict())
    resumed.on_epoch_end(t, 4, {"val/loss": 0.85})  # still not below 0.8: the second epoch without improvement
    assert t.stop_training and resumed.monitor.best_epoch == 2


def test_early_stopping_ends_a_real_run_early(tmp_path, idx_root):
    cfg = build_config(tiny_config(tmp_path, idx_root, optim={"lr": 1e-9}, schedule={"name": "none"},
                                   trainer={"epochs": 8, "early_stopping": {"enabled": True, "monitor": "val/acc",
                                                                            "mode": "max", "patience": 1}}))
    result = session.train(cfg, quiet=True)
    assert len(_epochs(result.run_dir)) < 8  # an LR of 1e-9 cannot improve validation accuracy for long


def test_keep_top_k_keeps_exactly_the_best_epochs(tmp_path):
    run = RunDir(tmp_path)
    cb = ModelCheckpoint(CheckpointConfig(monitor="val/acc", mode="max", keep_top_k=2), run)
    for epoch, acc in enumerate([0.5, 0.7, 0.6, 0.9, 0.65], start=1):
        cb.on_epoch_end(FakeTrainer(), epoch, {"val/acc": acc})
    kept = sorted(p.name for p in run.checkpoints.glob("epoch-*.pt"))
    assert kept == ["epoch-002.pt", "epoch-004.pt"]
    assert run.best.is_file() and cb.monitor.best_epoch == 4


def test_a_resume_redoes_the_copies_a_kill_cut_off_after_last_was_written(tmp_path):
    from types import SimpleNamespace


    run = RunDir(tmp_path)
    cb = ModelCheckpoint(CheckpointConfig(monitor="val/acc", mode="max", keep_top_k=2), run)
    for epoch, acc in enumerate([0.5, 0.7], start=1):
        cb.on_epoch_end(FakeTrainer(), epoch, {"val/acc": acc})
    # epoch 3 improved, last.pt was written with the monitor saying so, and the kill came before best.pt's copy
    Checkpoint(model={"w": torch.full((1,), 3.0)},
               callbacks={"checkpoint": {"monitor": {"best": 0.9, "best_epoch": 3},
                                         "top": [[0.9, 3], [0.7, 2], [0.5, 1]]}}).save(run.last)
    resumed = ModelCheckpoint(CheckpointConfig(monitor="val/acc", mode="max", keep_top_k=2), run)
    resumed.load_state_dict(read_checkpoint(run.last).callbacks["checkpoint"])
    resumed.on_fit_start(SimpleNamespace(state=LoopState(epoch=3)))
    assert load_checkpoint(run.best)["model"]["w"].item() == 3.0  # best is the epoch the monitor names
    assert sorted(p.name for p in run.checkpoints.glob("epoch-*.pt")) == ["epoch-002.pt", "epoch-003.pt"]
    # a resume whose last epoch was not the best leaves best alone
    Checkpoint(model={"w": torch.full((1,), 4.0)}).save(run.last)
    resumed.on_fit_start(SimpleNamespace(state=LoopState(epoch=4)))
    assert load_checkpoint(run.best)["model"]["w"].item() == 3.0


def _grad_norms(tmp_path, idx_root, monkeypatch, folder, **trainer):
    """The global gradient norm seen by each optimizer step of a short run."""
    norms = []
    cfg = build_config(tiny_config(tmp_path, idx_root, schedule={"name": "none"}, optim={"name": "sgd", "lr": 0.05},
                                   trainer={"epochs": 1, "limit_train_batches": 4, "test_after_fit": False, **trainer},
                                   log={"dir": str(tmp_path / folder), "progress": "none"}))
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch.optim.SGD, "step", step)
        session.train(cfg, quiet=True)
    return norms


def test_gradient_clipping_caps_the_global_norm(tmp_path, idx_root, monkeypatch):
    free = _grad_norms(tmp_path, idx_root, monkeypatch, "free")
    clipped = _grad_norms(tmp_path, idx_root, monkeypatch, "clipped", grad_clip=0.01)
    assert max(free) > 0.01 and max(clipped) <= 0.01 * 1.001 and len(clipped) == 4


def test_accumulating_two_batches_equals_one_batch_twice_as_large(tmp_path, idx_root):
    def final_weights(folder, batch_size, accumulate):
        cfg = build_config(tiny_config(
            tmp_path, idx_root, data={"batch_size": batch_size, "augment": {"crop_padding": 0, "hflip": False}},
            model={"name": "mlp", "args": {"hidden": [16], "dropout": 0.0}}, schedule={"name": "none"},
            optim={"name": "sgd", "lr": 0.05, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
            trainer={"epochs": 1, "accumulate": accumulate, "precision": "32", "limit_train_batches": 4 * accumulate,
                     "test_after_fit": False}, log={"dir": str(tmp_path / folder), "progress": "none"}))
        return load_checkpoint(session.train(cfg, quiet=True).run_dir / "checkpoints" / "last.pt")["model"]

    big, accumulated = final_weights("big", 64, 1), final_weights("acc", 32, 2)
    for name in big:  # the same samples in the same order: equal up to float summation order
        torch.testing.assert_close(big[name], accumulated[name], rtol=1e-4, atol=1e-5)


def test_limit_and_overfit_batches_bound_the_epoch(tmp_path, idx_root):
    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 1, "limit_train_batches": 3,
                                                                "limit_val_batches": 1}))
    result = session.train(cfg, quiet=True)
    assert load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["loop"]["step"] == 3
    over = build_config(tiny_config(tmp_path, idx_root, optim={"name": "adamw", "lr": 3e-3},
                                    schedule={"name": "none"}, trainer={"epochs": 25, "overfit_batches": 1,
                                                                        "test_after_fit": False},
                                    log={"dir": str(tmp_path / "over"), "progress": "none"}))
    rows = _epochs(session.train(over, quiet=True).run_dir)
    assert rows[-1]["step"] == 25  # one batch per epoch
    assert rows[-1]["train/acc"] == 1.0 and rows[-1]["train/loss"] < rows[0]["train/loss"] / 5


def test_the_reports_mistakes_are_wrong_and_sorted_by_confidence(tmp_path, idx_root):
    from kiln.commands.report import most_confident_mistakes
    from kiln.data import DataRequest, build_data
    from kiln.train.evaluation import collect_predictions
    from kiln.train.trained import load_trained

    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 1}))
    run = RunDir(session.train(cfg, quiet=True).run_dir)
    mistakes = most_confident_mistakes(run, 5)
    assert mistakes["confidence"] == sorted(mistakes["confidence"], reverse=True)
    assert all(t != p for t, p in zip(mistakes["true"], mistakes["predicted"]))
    trained = load_trained(run)
    data = build_data(trained.cfg.data, DataRequest(seed=0, device=trained.device, splits=("test",)))
    probs, true = collect_predictions(trained.model, data.test, trained.task, trained.device, "32")
    conf, pred = probs.max(-1)
    wrong = conf[pred != true]
    assert len(mistakes["true"]) == min(5, len(wrong))
    assert mistakes["confidence"][0] == pytest.approx(wrong.max().item())


def test_a_model_collapsed_onto_one_class_is_warned_about_once_in_the_log_and_the_report(tmp_path, idx_root, caplog,
                                                                                          cli):
    cfg = build_config(tiny_config(tmp_path, idx_root, model={"name": "constantmodel:Constant"},
                                   data={"augment": {"crop_padding": 0, "hflip": False}},
                                   trainer={"epochs": 4, "test_after_fit": False}))
    with caplog.at_level("WARNING", logger="kiln"):
        run = session.train(cfg, quiet=True).run_dir
    warnings = [r.getMessage() for r in caplog.records if "collapsed onto a constant answer" in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # once, though it stays collapsed at epoch 4
    assert "100% of the validation predictions are one class" in warnings[0] and "at epochs 1-3" in warnings[0]
    assert "data.image_size" in warnings[0] and "lr-find" in warnings[0]
    assert all(row["val/top_class_share"] == 1.0 for row in _epochs(run))
    assert cli("report", run, "--mistakes", "0").returncode == 0
    assert "collapsed onto a constant answer" in (run / "report.html").read_text()
    from PIL import Image

    from fakedata import make_images

    (tmp_path / "new").mkdir()
    for i, img in enumerate(make_images(10, seed=5)[0]):
        Image.fromarray(img.numpy()).save(tmp_path / "new" / f"{i}.png")
    predicted = cli("predict", run, tmp_path / "new")
    assert predicted.returncode == 0 and "all 10 inputs got the same prediction" in predicted.stderr

    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 3, "test_after_fit": False}))
    caplog.clear()
    with caplog.at_level("WARNING", logger="kiln"):
        run = session.train(cfg, quiet=True).run_dir  # a model that learns is not warned about
    assert "collapsed onto a constant" not in caplog.text and max(row["val/top_class_share"] for row in _epochs(run)) < 0.95
    assert cli("report", run, "--mistakes", "0").returncode == 0
    assert "collapsed onto a constant" not in (run / "report.html").read_text()
