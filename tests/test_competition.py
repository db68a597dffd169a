"""Test-time augmentation, ensembles (several runs, a cv folder, ONNX files) and submission files, through the CLI
as a competitor uses them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config, write_config
from kiln.commands.samples import write_sample_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, idx_root) -> dict[str, Path]:
    """Two trained runs on the generated Fashion-MNIST: a plain CNN and a mirror-invariant model."""
    from kiln.cli import main

    tmp = tmp_path_factory.mktemp("competition")
    out = {}
    for name, model in (("cnn", {"name": "cnn", "args": {"channels": [8, 16]}}),
                        ("mirrored", {"name": "ttamodels:Mirrored"})):
        cfg = tiny_config(tmp, idx_root, model=model, trainer={"epochs": 1})
        assert main(["train", str(write_config(tmp, cfg, f"{name}.yaml")), "--run-dir", str(tmp / name)]) == 0
        out[name] = tmp / name
    return out


@pytest.fixture(scope="module")
def test_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("test_images")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"img_{i:03d}.png")
    return folder


def _results(path: Path) -> dict:
    return json.loads(path.read_text())


def test_tta_of_a_mirror_invariant_model_equals_no_tta_and_differs_for_a_mirror_sensitive_one(runs, cli):
    for name in ("mirrored", "cnn"):
        assert cli("test", runs[name]).returncode == 0
        plain = _results(runs[name] / "test_metrics.json")
        out = cli("test", runs[name], "--tta", "hflip")
        assert out.returncode == 0, out.stderr
        tta = _results(runs[name] / "test_metrics-tta-hflip.json")
        assert tta["tta"] == "hflip" and tta["num_samples"] == plain["num_samples"]
        assert _results(runs[name] / "test_metrics.json") == plain  # the run's own results stay its own
        if name == "mirrored":
            assert tta["loss"] == pytest.approx(plain["loss"], rel=1e-5) and tta["acc"] == plain["acc"]
        else:
            assert tta["loss"] != pytest.approx(plain["loss"], rel=1e-4)


def test_an_ensemble_of_two_copies_of_a_run_equals_the_run(runs, tmp_path, cli, test_images):
    copy = tmp_path / "copy"
    shutil.copytree(runs["cnn"], copy)
    assert cli("test", runs["cnn"]).returncode == 0
    one = _results(runs["cnn"] / "test_metrics.json")
    out = cli("test", runs["cnn"], copy, "--out", tmp_path / "ensemble.json")
    assert out.returncode == 0, out.stderr
    both = _results(tmp_path / "ensemble.json")
    assert [m["weight"] for m in both["ensemble"]] == [0.5, 0.5]
    assert both["acc"] == one["acc"] and both["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert both["confusion_matrix"] == one["confusion_matrix"]

    alone = cli("predict", runs["cnn"], test_images, "--json", "--top-k", "10")
    pair = cli("predict", runs["cnn"], copy, test_images, "--json", "--top-k", "10", "--weights", "3,1")
    assert alone.returncode == pair.returncode == 0, pair.stderr
    a, b = ([json.loads(line) for line in out.stdout.splitlines()] for out in (alone, pair))
    assert len(a) == len(b) == 12 and [r["label"] for r in a] == [r["label"] for r in b]
    assert np.allclose([t["probability"] for r in a for t in r["top"]],
                       [t["probability"] for r in b for t in r["top"]], atol=1e-5)


def test_an_ensemble_of_different_runs_averages_their_probabilities(runs, cli, test_images):
    rows = {}
    for key, models in (("cnn", [runs["cnn"]]), ("mirrored", [runs["mirrored"]]),
                        ("both", [runs["cnn"], runs["mirrored"]])):
        out = cli("predict", *models, test_images, "--json", "--top-k", "10")
        assert out.returncode == 0, out.stderr
        rows[key] = [{t["label"]: t["probability"] for t in json.loads(line)["top"]} for line in out.stdout.splitlines()]
    for c, m, b in zip(rows["cnn"], rows["mirrored"], rows["both"]):
        assert all(b[k] == pytest.approx((c[k] + m[k]) / 2, abs=1e-5) for k in b)


def test_ensembles_of_runs_that_answer_different_questions_are_refused(runs, tmp_path, idx_root, cli):
    cfg = tiny_config(tmp_path, idx_root, trainer={"epochs": 1}, data={"classes": [0, 1, 2]})
    assert cli("train", write_config(tmp_path, cfg), "--run-dir", tmp_path / "three").returncode == 0
    out = cli("test", runs["cnn"], tmp_path / "three")
    assert out.returncode == 2 and "does not answer the same question" in out.stderr
    out = cli("test", runs["cnn"], runs["mirrored"], "--weights", "1,2,3")
    assert out.returncode == 2 and "3 weights for 2 models" in out.stderr
    out = cli("test", runs["cnn"], "--tta", "spin")
    assert out.returncode == 2 and "'spin' is not a set of views" in out.stderr


def test_a_cv_folder_predicts_as_the_ensemble_of_its_folds(runs, tmp_path, cli, test_images):
    cv = tmp_path / "cv-20260101-000000"
    for k, name in enumerate(("cnn", "mirrored"), start=1):
        shutil.copytree(runs[name], cv / f"fold-{k}")
    folds = cli("predict", cv, test_images, "--json", "--top-k", "10")
    listed = cli("predict", runs["cnn"], runs["mirrored"], test_images, "--json", "--top-k", "10")
    assert folds.returncode == 0 and folds.stdout == listed.stdout


def test_onnx_prediction_takes_the_same_views(runs, tmp_path, cli, test_images):
    pytest.importorskip("onnxruntime")
    assert cli("export", runs["cnn"], "--format", "onnx", "--out", tmp_path / "model.onnx").returncode == 0
    probs = {}
    for model in (runs["cnn"], tmp_path / "model.onnx"):
        out = cli("predict", model, test_images, "--tta", "crops:3", "--json", "--top-k", "10")
        assert out.returncode == 0, out.stderr
        probs[model.suffix] = [t["probability"] for line in out.stdout.splitlines() for t in json.loads(line)["top"]]
    assert np.allclose(probs[""], probs[".onnx"], atol=1e-4)


def _template(path: Path, ids: list[str], header=("id", "label"), fill="0") -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[i, fill] for i in ids])
    return path


def test_a_submission_fills_the_template_row_for_row(runs, tmp_path, cli, test_images):
    ids = [f"img_{i:03d}" for i in reversed(range(12))]  # the template's own order, ids without extension
    template = _template(tmp_path / "sample_submission.csv", ids)
    out = cli("predict", runs["cnn"], test_images, "--submission", template, "--out", tmp_path / "submission.csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "submission.csv").open()))
    assert [r["id"] for r in rows] == ids
    predicted = {Path(json.loads(line)["input"]).stem: json.loads(line)["label"]
                 for line in cli("predict", runs["cnn"], test_images, "--json").stdout.splitlines()}
    from kiln.train.trained import load_trained

    names = load_trained(runs["cnn"]).info.class_names
    assert [r["label"] for r in rows] == [str(names.index(predicted[i])) for i in ids]  # integers: indices
    named = cli("predict", runs["cnn"], test_images, "--submission", template, "--out", tmp_path / "named.csv",
                "--labels", "name")
    assert named.returncode == 0
    assert [r["label"] for r in csv.DictReader((tmp_path / "named.csv").open())] == [predicted[i] for i in ids]


@pytest.mark.parametrize(("ids", "header", "message"), [
    ([f"img_{i:03d}.png" for i in range(11)], ("id", "label"), "1 predicted images not in the template: .*img_011"),
    ([f"img_{i:03d}" for i in range(13)], ("id", "label"), "1 template rows with no predicted image: img_012"),
    ([f"img_{i:03d}" for i in [0, 0, *range(1, 12)]], ("id", "label"), "1 ids on more than one template row: img_000"),
    ([f"photo_{i}" for i in range(12)], ("id", "label"), "no column of .* names the predicted files"),
    ([f"img_{i:03d}" for i in range(12)], ("id", "label", "extra"), "name the one to fill with --label-column"),
])
def test_every_submission_mismatch_is_exit_2_and_writes_nothing(runs, tmp_path, cli, test_images, ids, header,
                                                                message):
    import re

    template = tmp_path / "template.csv"
    with template.open("w", newline="") as f:
        csv.writer(f).writerows([header, *[[i, "0", "x"][:len(header)] for i in ids]])
    out = cli("predict", runs["cnn"], test_images, "--submission", template, "--out", tmp_path / "submission.csv")
    assert out.returncode == 2 and re.search(message, out.stderr), out.stderr
    assert not (tmp_path / "submission.csv").exists()


def test_the_same_stem_twice_among_the_inputs_is_refused(runs, tmp_path, cli, test_images):
    folder = tmp_path / "images"
    shutil.copytree(test_images, folder)
    Image.open(folder / "img_000.png").save(folder / "img_000.jpg")
    template = _template(tmp_path / "t.csv", [f"img_{i:03d}" for i in range(12)])
    out = cli("predict", runs["cnn"], folder, "--submission", template, "--out", tmp_path / "s.csv")
    assert out.returncode == 2 and "more than one input file" in out.stderr and "img_000.jpg" in out.stderr


def test_views_are_undone_for_answers_per_pixel():
    from kiln.config import SegmentationTaskConfig
    from kiln.tasks.segmentation import SegmentationTask
    from kiln.train.ensemble import WithViews, tta_views

    class Shift(torch.nn.Module):  # per-pixel scores that depend on where the pixel is: not flip-invariant
        def forward(self, x):
            ramp = torch.linspace(0, 1, x.shape[-1])
            return torch.stack([x[:, 0] * ramp, x[:, 0] * (1 - ramp)], 1)

    task = SegmentationTask(SegmentationTaskConfig(), 2)
    x = torch.rand(2, 1, 6, 8)
    flipped = WithViews(Shift(), task, tta_views("hflip"))(x)
    by_hand = task.average([Shift()(x), Shift()(x.flip(-1)).flip(-1)], [0.5, 0.5])
    assert torch.allclose(flipped, by_hand)
    with pytest.raises(Exception, match="cannot be mapped back"):
        WithViews(Shift(), task, tta_views("crops:2"))(x)


def test_the_competition_recipe_trains_every_tool_together(tmp_path, cli):
    """configs/image_competition.yaml with a small timm model from scratch (no weights here): MixUp + CutMix,
    TrivialAugment, random erasing, EMA and keep_last_k in one run, then averaged and predicted with TTA."""
    pytest.importorskip("timm")
    from conftest import ROOT

    photos = write_sample_photos(tmp_path / "photos", per_class=12)
    out = cli("train", ROOT / "configs" / "image_competition.yaml", f"data.root={photos}", "data.image_size=32",
              "data.num_workers=0", "model.name=timm:resnet10t", "model.pretrained=null", "trainer.epochs=2",
              "data.augment.mix_off_epoch=2", "trainer.checkpoint.keep_last_k=2", f"log.dir={tmp_path / 'runs'}",
              "--run-dir", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    assert cli("average", tmp_path / "run", "--last", "2").returncode == 0
    out = cli("predict", tmp_path / "run", photos / "red_square", "--checkpoint", "averaged", "--tta", "flips")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 12
