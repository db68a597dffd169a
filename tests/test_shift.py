"""kiln shift (adversarial validation) and data.val_files: an AUC near 0.5 for two random halves of one set, near 1
for a set against its colour-inverted copy; the images most like the other folder become the validation split."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import write_config
from kiln.commands.samples import write_sample_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path]:
    """A generated photo folder cut at random into a training folder (class folders) and an unlabelled folder."""
    tmp = tmp_path_factory.mktemp("shift")
    everything = write_sample_photos(tmp / "all", per_class=40)
    train, other = tmp / "train", tmp / "other"
    rng = random.Random(1)
    for path in sorted(everything.rglob("*.*")):
        if rng.random() < 0.5:
            (train / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, train / path.parent.name / path.name)
        else:
            other.mkdir(exist_ok=True)
            shutil.copy(path, other / f"{path.parent.name}-{path.name}")
    return train, other


def _config(tmp: Path, root: Path, **data) -> Path:
    return write_config(tmp, {"data": {"name": "image_folder", "root": str(root), "image_size": 32, **data},
                              "model": {"name": "cnn", "args": {"channels": [8, 16]}},
                              "trainer": {"epochs": 1}, "log": {"dir": str(tmp / "runs"), "progress": "none"}})


def test_two_random_halves_of_one_set_look_alike(halves, tmp_path, cli):
    train, other = halves
    out = cli("shift", _config(tmp_path, train), other, "--json", tmp_path / "shift.json")
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads((tmp_path / "shift.json").read_text())
    assert 0.3 < result["auc"] < 0.7, result["auc"]
    assert "look alike" in out.stdout and len(result["most_foreign"]["train"]) == 5


def test_a_set_against_its_colour_inverted_copy_is_told_apart(halves, tmp_path, cli):
    train, _ = halves
    inverted = tmp_path / "inverted"
    inverted.mkdir()
    for path in sorted(train.rglob("*.*")):
        ImageOps.invert(Image.open(path).convert("RGB")).save(inverted / f"{path.parent.name}-{path.stem}.png")
    out = cli("shift", _config(tmp_path, train), inverted)
    assert out.returncode == 0, out.stderr
    auc = float(out.stdout.split()[2])
    assert auc > 0.95 and "strong shift" in out.stdout


def test_val_like_writes_a_validation_split_that_training_uses(halves, tmp_path, cli):
    from kiln.config.files import load_config
    from kiln.train.plan import RunPlan

    train, other = halves
    config = _config(tmp_path, train)
    out = cli("shift", config, other, "--val-like", "12", "--out", tmp_path / "val.txt")
    assert out.returncode == 0, out.stderr
    listed = [line for line in (tmp_path / "val.txt").read_text().splitlines() if not line.startswith("#")]
    assert len(listed) == 12 and all((train / line).is_file() for line in listed)  # relative to data.root
    data = RunPlan.of(load_config(config, [f"data.val_files={tmp_path / 'val.txt'}"]), "cpu").data(("train", "val"))
    assert data.sizes["val"] == 12 and data.sizes["train"] == sum(1 for _ in train.rglob("*.*")) - 12
    result = cli("train", config, f"data.val_files={tmp_path / 'val.txt'}", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr


def test_a_val_files_line_that_is_not_a_training_image_is_a_clear_error(halves, tmp_path, cli):
    train, _ = halves
    (tmp_path / "val.txt").write_text("red_square/nothing.png\n")
    out = cli("train", _config(tmp_path, train, val_files=str(tmp_path / "val.txt")))
    assert out.returncode == 2 and "1 of its 1 lines are not training images" in out.stderr


def test_a_run_compares_by_its_models_features(halves, tmp_path, cli):
    train, other = halves
    assert cli("train", _config(tmp_path, train), "--run-dir", tmp_path / "run").returncode == 0
    out = cli("shift", tmp_path / "run", other)
    assert out.returncode == 0, out.stderr
    assert 0.25 < float(out.stdout.split()[2]) < 0.75


def test_data_without_image_files_is_a_clear_error(tmp_path, idx_root, cli):
    config = write_config(tmp_path, {"data": {"name": "fashion_mnist", "root": str(idx_root)}})
    out = cli("shift", config, tmp_path)
    assert out.returncode == 2 and "kiln shift compares image files" in out.stderr
