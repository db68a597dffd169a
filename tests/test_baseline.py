"""kiln baseline, and the shipped small-data recipes against it: configs/text_csv.yaml on a generated small text
task and configs/image_folder.yaml on a 500-image colour folder (each with a smaller step budget, to keep the
suite short) must beat the classical baseline on the same split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import ROOT
from fakedata import make_news, write_image_folder
from kiln.cli import main
from kiln.config import load_config
from kiln.train import session

pytest.importorskip("sklearn", reason="pip install -e .[baseline]")


def _write_text_csv(root: Path, n_train: int) -> Path:
    names = ["World", "Sports", "Business", "Sci/Tech"]
    root.mkdir(parents=True)
    for split, count, seed in (("train", n_train, 1), ("test", 300, 2)):
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([f"{title} {desc}", names[label - 1]] for label, title, desc in make_news(count, seed))
    return root


def _beats_its_baseline(config: str, overrides: list[str], capsys) -> tuple[float, float]:
    cfg = load_config(ROOT / "configs" / config, overrides)
    run = session.train(cfg, quiet=True).run_dir
    capsys.readouterr()
    assert main(["baseline", str(run)]) == 0
    printed = capsys.readouterr().out
    baseline = json.loads((run / "baseline.json").read_text())
    network = json.loads((run / "test_metrics.json").read_text())
    assert baseline["split"] == "test" and "the network: test accuracy" in printed
    return network["acc"], baseline["acc"]


def test_the_text_recipe_beats_tfidf_on_a_small_text_task(tmp_path, capsys):
    root = _write_text_csv(tmp_path / "texts", 300)
    network, baseline = _beats_its_baseline("text_csv.yaml", [
        f"data.root={root}", "trainer.min_steps=500", f"log.dir={tmp_path / 'runs'}", "log.progress=none",
        "log.tensorboard=false"], capsys)
    assert network > baseline, (network, baseline)


@pytest.mark.slow
def test_the_image_recipe_beats_a_linear_model_on_500_colour_images(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    root = write_image_folder(tmp_path / "photos", n=500, extras=False)
    network, baseline = _beats_its_baseline("image_folder.yaml", [
        f"data.root={root}", "data.image_size=32", "trainer.epochs=15", "trainer.min_steps=60",
        f"log.dir={tmp_path / 'runs'}",
        "log.progress=none", "log.tensorboard=false"], capsys)
    assert network > baseline + 0.2, (network, baseline)  # colour x shape at any place: not linear in the pixels


def test_baseline_of_a_config_and_of_a_users_dataset(tmp_path, capsys, idx_root):
    from conftest import tiny_config, write_config

    config = write_config(tmp_path, tiny_config(tmp_path, idx_root))
    assert main(["baseline", str(config), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_train"] == 384 and 0.3 < result["acc"] <= 1  # the training split without validation
    own = write_config(tmp_path, tiny_config(tmp_path, idx_root, data={"name": "userdata:Blobs"}), "own.yaml")
    assert main(["baseline", str(own)]) == 2
    assert "a Dataset of your own" in capsys.readouterr().err
