"""task.name: multihead — several label columns of an image CSV, one head each on one backbone: it learns both
columns of generated data, records its columns, tests per head and predicts one column per head (and the combined
class); a missing column or an empty cell is exit 2 naming it."""

import csv
import json

import pytest
import yaml

from conftest import ROOT, only_run
from fakedata import write_multihead_image_csv
from kiln.cli import main


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_multihead_image_csv(tmp_path_factory.mktemp("shapes"), n=600)


def _train(tmp_path, root, *overrides):
    return main(["train", str(ROOT / "configs" / "multihead_csv.yaml"), f"data.root={root}",
                 "data.label_column=[colour,shape]", "task.weights=[1,1]", "data.image_size=40",
                 "data.augment.resized_crop=false",
                 "trainer.min_steps=null", "model.args.channels=[16,32,64]", f"log.dir={tmp_path / 'runs'}",
                 "log.progress=none", "log.tensorboard=false", *overrides])


def test_multihead_learns_two_label_columns_tests_per_head_and_predicts_each_column(tmp_path, shapes, own_cache):
    assert _train(tmp_path, shapes, "trainer.epochs=25") == 0
    run = only_run(tmp_path / "runs")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["task"]["columns"] == ["colour", "shape"] and saved["task"]["heads"] == [2, 2]
    assert saved["trainer"]["checkpoint"]["monitor"] == "val/acc_all"
    results = json.loads((run / "test_metrics.json").read_text())
    assert results["task"] == "multihead"
    assert results["acc/colour"] > 0.9 and results["acc/shape"] > 0.85, results  # chance: 0.5 each
    assert results["acc_all"] > 0.8, results  # chance: 0.25
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert all(m in header for m in ("val/acc/colour", "val/f1_macro/shape", "val/acc_all", "train/acc_all"))

    assert main(["report", str(run)]) == 0
    assert "acc/shape" in (run / "report.html").read_text()  # the per-head scores, beside the summary

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(shapes / "test.csv"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    truth = list(csv.DictReader((shapes / "test.csv").open()))
    assert list(rows[0]) == ["file", "colour", "shape", "class"]
    assert {r["colour"] for r in rows} <= {"blue", "red"} and {r["shape"] for r in rows} <= {"disc", "square"}
    right = sum(p["colour"] == t["colour"] for p, t in zip(rows, truth)) / len(rows)
    assert right > 0.9
    for r in rows:  # row-major over [colour, shape]: blue-disc 0, blue-square 1, red-disc 2, red-square 3
        assert int(r["class"]) == ["blue", "red"].index(r["colour"]) * 2 + ["disc", "square"].index(r["shape"])


@pytest.mark.parametrize("change, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "shape"} for r in rows], "has no column 'shape'"),
    (lambda rows: [{**r, "shape": ""} if i == 3 else r for i, r in enumerate(rows)], "label column 'shape' is empty"),
])
def test_a_missing_column_or_an_empty_cell_is_exit_2(tmp_path, shapes, own_cache, capsys, change, message):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes, root)
    rows = change(list(csv.DictReader((shapes / "train.csv").open())))
    with (root / "train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert _train(tmp_path, root, "trainer.epochs=1") == 2
    err = capsys.readouterr().err
    assert message in err and "train.csv" in err
