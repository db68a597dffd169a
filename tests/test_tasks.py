"""Tasks beyond one label per sample: multilabel (label sets from image and text CSVs, a user's multi-hot Dataset,
thresholds) and regression (numeric columns, standardised targets, predictions in the original units), their
splits and folds, and the inputs they refuse."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import only_run, tiny_config, write_config
from fakedata import (
    BLOB_COLOURS,
    TOPIC_NAMES,
    write_multilabel_image_csv,
    write_multilabel_text_csv,
    write_regression_image_csv,
    write_regression_text_csv,
)
from kiln.cli import main
from kiln.commands.cv import run_cv
from kiln.commands.predict import predict
from kiln.config import DataConfig, build_config, task_config
from kiln.core.errors import KilnError, TrainingInterrupted
from kiln.core.state import load_checkpoint
from kiln.data import DataRequest, build_data, cv_folds
from kiln.tasks import MultilabelTask, RegressionTask
from kiln.tasks.targets import iterative_folds
from kiln.train import session
from kiln.train.callbacks import LambdaCallback

CPU = torch.device("cpu")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    return write_multilabel_image_csv(tmp_path_factory.mktemp("blobs"), n=240)


@pytest.fixture(scope="module")
def discs(tmp_path_factory) -> Path:
    return write_regression_image_csv(tmp_path_factory.mktemp("discs"), n=240)


@pytest.fixture(scope="module")
def topics(tmp_path_factory) -> Path:
    return write_multilabel_text_csv(tmp_path_factory.mktemp("topics"), n_train=400, n_test=120)


def _image_config(tmp_path: Path, root: Path, task: dict, epochs: int, **data) -> dict:
    return {"name": "own", "seed": 0, "task": task,
            "data": {"name": "image_csv", "root": str(root), "image_size": 32, "batch_size": 32, "val_split": 0.15,
                     **data},
            "model": {"name": "cnn", "args": {"channels": [16, 32]}},
            "optim": {"name": "adamw", "lr": 0.005}, "schedule": {"name": "onecycle"}, "trainer": {"epochs": epochs},
            "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}


def _text_config(tmp_path: Path, root: Path, **task) -> dict:
    return {"name": "topics", "task": {"name": "multilabel", **task},
            "data": {"name": "text_csv", "root": str(root), "batch_size": 32, "val_split": 0.2,
                     "text": {"label_column": "labels"}},
            "model": {"name": "embedding_bag"}, "optim": {"name": "adamw", "lr": 0.01}, "trainer": {"epochs": 8},
            "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- end to end, through the CLI

def _shipped(name: str, tmp_path: Path, root: Path, *overrides: str) -> list[str]:
    """`kiln train configs/<name>` on generated data: small images, a short budget."""
    return ["train", str(CONFIGS / name), f"data.root={root}", "data.image_size=32", "trainer.min_steps=null",
            f"log.dir={tmp_path / 'runs'}", "log.progress=none", "log.tensorboard=false", *overrides]


def test_the_multilabel_config_learns_an_image_csv_then_tests_predicts_and_reports(tmp_path, blobs, capsys):
    assert main(_shipped("multilabel_csv.yaml", tmp_path, blobs, "trainer.epochs=10")) == 0
    run = only_run(tmp_path / "runs")
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["task"] == "multilabel" and metrics["f1_micro"] >= 0.85, metrics["f1_micro"]
    assert list(metrics["per_label"]) == sorted(BLOB_COLOURS) and metrics["num_samples"] == 80
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["checkpoint"] == {**saved["trainer"]["checkpoint"], "monitor": "val/f1_micro",
                                              "mode": "max"}  # the task's default monitor, recorded
    assert len(saved["task"]["threshold"]) == 3  # tuned per label on validation

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(blobs / "test.csv"), "--out", str(out)]) == 0
    predicted, truth = _rows(out), _rows(blobs / "test.csv")
    assert list(predicted[0]) == ["file", "labels", *sorted(BLOB_COLOURS)]
    same = sum(set(p["labels"].split("|")) == set(t["labels"].split("|")) for p, t in zip(predicted, truth))
    assert same >= 0.75 * len(truth), same  # whole label sets right (empty ones included)

    assert main(["report", str(run)]) == 0
    assert (run / "figures" / "per_label.png").is_file() and "threshold" in (run / "report.html").read_text()
    assert main(["inspect", str(run), "--batch"]) == 0  # the batch's images titled with their label sets
    assert "label counts: blue" in capsys.readouterr().out


def test_the_regression_config_reaches_r2_on_an_image_csv_and_predicts_in_the_original_units(tmp_path, discs):
    assert main(_shipped("regression_csv.yaml", tmp_path, discs, "data.label_column=[brightness,x]",
                         "trainer.epochs=15")) == 0
    run = only_run(tmp_path / "runs")
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["r2"] >= 0.9, metrics
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["checkpoint"]["monitor"] == "val/mae" and saved["trainer"]["checkpoint"]["mode"] == "min"
    brightness = [float(r["brightness"]) for r in _rows(discs / "train.csv")]
    assert abs(saved["task"]["target_mean"][0] - sum(brightness) / len(brightness)) < 15  # of the training split

    out = tmp_path / "values.csv"
    assert main(["predict", str(run), str(discs / "test.csv"), "--out", str(out)]) == 0
    predicted, truth = _rows(out), _rows(discs / "test.csv")
    assert list(predicted[0]) == ["file", "brightness", "x"]
    for column, tolerance in (("brightness", 20.0), ("x", 0.05)):  # 40–250 and 0–1: the CSV's own units
        error = sum(abs(float(p[column]) - float(t[column])) for p, t in zip(predicted, truth)) / len(truth)
        assert error < tolerance, (column, error)

    assert main(["baseline", str(run)]) == 0  # ridge regression on the same split, beside the network
    baseline = json.loads((run / "baseline.json").read_text())
    assert baseline["task"] == "regression" and {"mae", "r2"} <= set(baseline)

    assert main(["report", str(run)]) == 0
    assert (run / "figures" / "predicted_vs_true.png").is_file() and (run / "figures" / "residuals.png").is_file()
    assert "baseline: ridge regression" in (run / "report.html").read_text()

    assert main(["export", str(run), "--format", "onnx"]) == 0  # the graph's outputs, scaled back by predict
    exported = predict(run / "model.onnx", [str(discs / "test.csv")])
    assert [v for p in exported for _, v in p.top] == \
        pytest.approx([float(p[c]) for p in predicted for c in ("brightness", "x")], rel=1e-4, abs=1e-3)


def test_a_multilabel_text_csv_tunes_its_thresholds_on_validation(tmp_path, topics, capsys):
    result = session.train(build_config(_text_config(tmp_path, topics, tune_threshold=True)), quiet=True)
    assert result.test_metrics is not None and result.test_metrics["f1_micro"] >= 0.85, result.test_metrics
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    thresholds = saved["task"]["threshold"]
    assert isinstance(thresholds, list) and len(thresholds) == 4 and all(0 < t < 1 for t in thresholds)
    assert result.test_metrics["thresholds"] == thresholds  # the test used them
    assert main(["predict", str(result.run_dir), "the coach scored a goal and the chip market rallied", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(answer["probabilities"]) == set(TOPIC_NAMES) and "sports" in answer["labels"]


def test_a_users_dataset_of_multi_hot_vectors_trains_as_multilabel(tmp_path):
    raw = tiny_config(tmp_path, tmp_path, task={"name": "multilabel"},
                      data={"name": "userdata:TaggedBlobs", "batch_size": 16, "val_split": 0.2,
                            "augment": {"crop_padding": 0, "hflip": False}},
                      model={"name": "userdata:TinyNet", "args": {}}, trainer={"epochs": 2})
    raw["data"].pop("root")
    result = session.train(build_config(raw), quiet=True)
    assert result.test_metrics is not None and list(result.test_metrics["per_label"]) == ["a", "b", "c", "bright"]


def test_kiln_cv_folds_a_multilabel_text_csv_iteratively_and_scores_the_ensemble(tmp_path, topics):
    cfg = build_config(_text_config(tmp_path, topics) | {"trainer": {"epochs": 3}})
    summary = run_cv(cfg, 3, test=True)
    assert summary["metrics"] == ["f1_micro", "f1_macro", "map", "acc", "loss"]
    assert sum(f["num_samples"] for f in summary["folds"]) == 400  # every training text held out once
    assert 0.5 < summary["test"]["ensemble_f1_micro"] <= 1 and len(summary["test"]["f1_micro_per_fold"]) == 3


def test_a_text_regression_resumes_bit_exactly_with_the_scaling_it_started_with(tmp_path):
    root = write_regression_text_csv(tmp_path / "reviews")

    def cfg(folder: str):
        return build_config({"name": "stars", "task": {"name": "regression", "loss": "huber"},
                             "data": {"name": "text_csv", "root": str(root), "batch_size": 32, "val_split": 0.2,
                                      "text": {"label_column": ["stars"]}},
                             "model": {"name": "embedding_bag"}, "optim": {"name": "adamw", "lr": 0.02},
                             "trainer": {"epochs": 4},
                             "log": {"dir": str(tmp_path / folder), "progress": "none", "tensorboard": False}})

    full = session.train(cfg("full"), quiet=True)
    assert full.test_metrics is not None and full.test_metrics["r2"] > 0.9, full.test_metrics

    def stop(t):
        if t.state.step == 10:  # in epoch 2
            t.stop_requested = True

    with pytest.raises(TrainingInterrupted):
        session.train(cfg("cut"), quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    run = only_run(tmp_path / "cut")
    scaling = yaml.safe_load((run / "config.yaml").read_text())["task"]["target_mean"]
    resumed = session.train(cfg("cut"), resume=run, quiet=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["task"]["target_mean"] == scaling
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- splits, folds, losses

def test_iterative_folds_give_every_fold_its_share_of_every_label():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(300, 5, generator=g) < torch.tensor([0.5, 0.3, 0.1, 0.05, 0.02])).float()
    fold_of = iterative_folds(y, 3, torch.randperm(300, generator=g))
    assert set(fold_of.tolist()) == {0, 1, 2}
    per_fold = torch.stack([y[fold_of == k].sum(0) for k in range(3)])  # (folds, labels)
    assert ((per_fold - y.sum(0) / 3).abs() <= 1).all(), per_fold  # even the rarest label: one apart at most
    assert (torch.bincount(fold_of) - 100).abs().max() <= 3


def test_regression_folds_are_stratified_by_the_values():
    values = torch.linspace(0, 100, 90).flip(0).unsqueeze(1)
    from kiln.tasks import TASKS

    for k in (1, 2, 3):
        _, held = cv_folds(90, DataConfig(cv={"folds": 3, "fold": k}), TASKS["regression"].fold_keys(values, 3))
        assert len(held) == 30 and abs(values[held].mean() - 50) < 3  # each fold spans the whole range


def test_the_regression_task_learns_standardised_targets_and_reports_original_units():
    task = RegressionTask(task_config(name="regression", target_mean=[100.0], target_std=[20.0]), 1)
    targets = torch.tensor([80.0, 100.0, 140.0])
    outputs = torch.tensor([[-1.0], [0.0], [2.0]])  # exactly the standardised targets
    assert task.objective(outputs, targets) == 0 and torch.equal(task.predictions(outputs).squeeze(1), targets)
    metrics = task.metrics(CPU)
    metrics.update(outputs + 0.5, targets)  # half a standard deviation off: 10 in the original units
    assert metrics.compute()["mae"].item() == pytest.approx(10.0)


def test_multilabel_map_averages_over_the_labels_that_occur():
    task = MultilabelTask(task_config(name="multilabel"), 3)
    metrics = task.metrics(CPU)
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])  # label 3 never occurs
    metrics.update(torch.tensor([[5.0, -5, 0], [-5, 5, 0], [5, -5, 0], [-5, 5, 0]]), targets)
    assert metrics.compute()["map"].item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- what is refused, before training

def _csv(folder: Path, header: str, *rows: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


@pytest.mark.parametrize("task, header, row, message", [
    ("multiclass", "path,label", "red|blue", "such as .red.blue. hold several labels.*task.name=multilabel"),
    ("regression", "path,label", "bright", "regression target 'bright' in column 'label' is not a"),
    ("regression", "path,label", "", "line 3: empty regression target"),
])
def test_targets_that_do_not_fit_the_task_are_named_with_their_line(tmp_path, blobs, task, header, row, message):
    folder = _csv(tmp_path / "bad", header, f"{blobs}/images/train0001.png,1", f"{blobs}/images/train0000.png,{row}")
    with pytest.raises(KilnError, match=message):
        build_data(DataConfig(name="image_csv", root=folder, image_size=16), DataRequest(seed=0, device=CPU, task=task))


def test_a_test_label_never_seen_in_training_is_refused(tmp_path, blobs):
    folder = _csv(tmp_path / "unseen", "path,labels", f"{blobs}/images/train0001.png,red|blue")
    (folder / "test.csv").write_text(f"path,labels\n{blobs}/images/train0002.png,red|purple\n")
    with pytest.raises(KilnError, match=r"test.csv, line 2: label 'purple' is not among the training labels"):
        build_data(DataConfig(name="image_csv", root=folder, image_size=16, label_column="labels", val_split=0),
            DataRequest(seed=0, device=CPU, task="multilabel"))


@pytest.mark.parametrize("overrides, message", [
    ({"task": {"threshold": 0.3}}, "task.threshold is a multilabel setting; this task is multiclass"),
    ({"task": {"name": "regression", "loss": "bce"}}, "the regression task's losses are mse, l1, huber"),
    ({"task": {"name": "multilabel"}, "data": {"sampler": "weighted"}}, "task.pos_weight"),
    ({"task": {"name": "regression", "threshold": [0.5]}}, "multilabel setting"),
    ({"task": {"name": []}}, "task.name is multiclass, multilabel or regression"),  # found by test_fuzz
])
def test_task_settings_that_do_not_belong_are_config_errors(tmp_path, idx_root, overrides, message):
    with pytest.raises(KilnError, match=message):
        build_config(tiny_config(tmp_path, idx_root, **overrides))


def test_data_and_monitors_a_task_cannot_use_are_refused_before_training(tmp_path, idx_root, discs):
    with pytest.raises(KilnError, match="fashion_mnist has one class label per sample"):
        session.train(build_config(tiny_config(tmp_path, idx_root, task={"name": "regression"})), quiet=True)
    with pytest.raises(KilnError, match="an image folder gives each image one class"):
        build_data(DataConfig(name="image_folder", root=discs), DataRequest(seed=0, device=CPU, task="multilabel"))
    with pytest.raises(KilnError, match="several label columns are regression targets"):
        build_data(DataConfig(name="image_csv", root=discs, label_column=["brightness", "x"]), DataRequest(seed=0, device=CPU))
    raw = _image_config(tmp_path, discs, {"name": "regression"}, 1, label_column="brightness")
    raw["trainer"]["checkpoint"] = {"monitor": "val/acc"}
    with pytest.raises(KilnError, match=r"val/acc.*never produce.*val/mae"):
        session.train(build_config(raw), quiet=True)


def test_positive_weights_are_negatives_over_positives_on_the_training_split():
    from kiln.data.loaders import split_targets
    from kiln.tasks import pos_weight

    class Batches:  # a user Dataset's split: the targets are read by iterating it once
        def epoch(self, epoch):
            yield None, torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])

    def targets():
        return split_targets(Batches())

    weights = pos_weight(task_config(name="multilabel", pos_weight="auto"), targets, 3)
    assert weights.tolist() == pytest.approx([1 / 3, 3.0, 1.0])  # a label never present keeps 1
    with pytest.raises(KilnError, match=r"task.pos_weight has 2 values for 3 labels"):
        pos_weight(task_config(name="multilabel", pos_weight=[1.0, 2.0]), targets, 3)


def test_a_search_without_a_metric_optimises_what_the_task_keeps_best_pt_by(tmp_path, discs):
    from kiln.commands.tune.space import load_tune_config

    base = write_config(tmp_path, _image_config(tmp_path, discs, {"name": "regression"}, 1, label_column="x"))
    (tmp_path / "tune.yaml").write_text(f"base: {base.name}\nspace:\n  optim.lr: [0.001, 0.01]\n")
    tune = load_tune_config(tmp_path / "tune.yaml")
    assert (tune.metric, tune.mode) == ("val/mae", "min")


def test_switching_the_task_on_the_command_line_leaves_out_the_old_tasks_settings(tmp_path):
    from kiln.config import MultilabelTaskConfig, RegressionTaskConfig, load_config

    path = tmp_path / "run.yaml"
    path.write_text("task:\n  label_smoothing: 0.1\n  loss: cross_entropy\n")
    assert load_config(path).task.label_smoothing == 0.1
    switched = load_config(path, ["task.name=regression"])  # the old task's built-in loss goes too
    assert isinstance(switched.task, RegressionTaskConfig) and switched.task.loss is None
    assert load_config(path, ["task.name=regression", "task.loss=l1"]).task.loss == "l1"
    assert isinstance(load_config(path, ["task.name=multilabel"]).task, MultilabelTaskConfig)
    with pytest.raises(KilnError, match=r"task\.label_smoothing is a multiclass setting"):  # set with the switch
        load_config(path, ["task.name=regression", "task.loss=l1", "task.label_smoothing=0.2"])
