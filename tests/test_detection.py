"""task.name: detection on COCO files and YOLO folders of generated scenes (known boxes): a torchvision detector
trains through kiln's loop (targets passed to the model in training), is scored by mAP with each class's AP under
the dataset's names, resumes bit-exact mid-epoch; each bad annotation is exit 2 naming the file."""

import json

import pytest
import torch

from conftest import ROOT, assert_resumes_bit_exact
from fakedata import write_detection_scenes
from kiln.cli import main


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_detection_scenes(tmp_path_factory.mktemp("boxes"), n=48, size=64)


def _args(tmp_path, root, *overrides):
    return ["train", str(ROOT / "configs" / "detection_coco.yaml"), f"data.root={root}", "data.image_size=64",
            "data.batch_size=8", f"log.dir={tmp_path / 'runs'}", "log.progress=none", "log.tensorboard=false",
            *overrides]


def _losses(run):
    import csv

    return [float(r["train/loss"]) for r in csv.DictReader((run / "metrics.csv").open())]


# The COCO files train kiln's fcos_small (the shipped config's choice on a CPU), the YOLO folder a torchvision
# Faster R-CNN — both called as torchvision's detectors are, exported as the same one-image graph.
MODELS = {"coco_detection": "fcos_small", "yolo_detection": "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn"}


@pytest.mark.parametrize("layout", ["coco_detection", "yolo_detection"])
def test_a_detector_trains_on_either_layout_and_is_scored_per_class(tmp_path, scenes, capsys, monkeypatch, layout):
    run = tmp_path / "run"
    epochs = "trainer.epochs=8" if layout == "coco_detection" else "trainer.epochs=3"
    assert main([*_args(tmp_path, scenes, f"data.name={layout}", f"model.name={MODELS[layout]}", epochs),
                 "--run-dir", str(run)]) == 0
    results = json.loads((run / "test_metrics.json").read_text())
    assert results["task"] == "detection" and results["num_samples"] == 12
    assert results["class_names"] == ["background", "disc", "square"]  # COCO ids 3 and 7, numbered 1..K
    assert set(results["ap"]) <= {"disc", "square"} and 0 <= results["map"] <= results["map_50"] <= 1
    losses = _losses(run)
    assert losses[-1] < losses[0]  # the detector's own losses, summed, fall
    assert "val/map" in (run / "metrics.csv").read_text().splitlines()[0]
    err = capsys.readouterr().err
    assert "val loss" not in err and " map " in err  # detectors measure no validation loss: the line omits it
    if layout == "yolo_detection":  # Faster R-CNN's graph (RoIAlign, two NMS) exports and matches box by box
        assert main(["export", str(run), "--format", "onnx"]) == 0
        assert json.loads((run / "model.onnx.json").read_text())["parity"]["boxes"] <= 0.01
    else:  # predicting nothing scores mAP 0: the small FCOS learns the scenes
        assert results["map_50"] > 0.5 and results["map"] > 0.3, results
        _predictions_score_as_the_test_did(run, scenes, results["map"], tmp_path)
        assert main(["report", str(run)]) == 0
        assert "Worst test images" in (run / "report.html").read_text()
        _the_onnx_export_answers_the_same_boxes(run, scenes, tmp_path, capsys, monkeypatch)


def test_each_images_f1_matches_boxes_of_its_class_scored_at_least_half():
    from kiln.tasks.detection import DetectionTask

    task = DetectionTask.__new__(DetectionTask)  # image_scores needs no settings
    truth = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2])}
    found = {"boxes": torch.tensor([[1.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]]),
             "labels": torch.tensor([1, 1, 2]), "scores": torch.tensor([0.9, 0.8, 0.3])}
    scores, marks = task.image_scores([found, {**found, "scores": torch.zeros(3)}], [truth, truth])
    # image 1: the first box matches, the second is the wrong class, the third is below 0.5: F1 = 2*1/(2+2)
    assert scores == [pytest.approx(0.5), 0.0] and len(marks[0]["boxes"]) == 2 and len(marks[1]["boxes"]) == 0


def test_an_exports_boxes_are_compared_as_sets_above_the_cut():
    """Near-tied boxes may leave ONNX's NMS in another order (not a difference), a low-scored one may fall either
    side of the cut (not compared); a confident box moved, or missing with no box of its class left, is."""
    import math

    import numpy as np

    from kiln.tasks.detection import DetectionGraph

    class Detector(torch.nn.Module):  # where torchvision's one-stage detectors keep their cut
        score_thresh, detections_per_img = 0.05, 3

    graph = DetectionGraph(Detector())
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 9, 9]], dtype=np.float32)
    mine = (boxes, np.array([0.9, 0.9, 0.0505], dtype=np.float32), np.array([1, 2, 1]))
    swapped = (boxes[[1, 0]], mine[1][[1, 0]], mine[2][[1, 0]])  # the tie in the other order, the 0.0505 box cut
    assert graph.differences(mine, swapped) == {"boxes": 0.0, "scores": 0.0, "labels": 0.0}
    moved = (boxes + np.array([0.5, 0, 0, 0], dtype=np.float32), mine[1], mine[2])
    assert graph.differences(mine, moved)["boxes"] == 0.5
    assert graph.differences(mine, (boxes[:1], mine[1][:1], mine[2][:1]))["labels"] == math.inf  # the square lost
    nothing = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert graph.differences(mine, nothing)["boxes"] == math.inf and graph.differences(nothing, nothing)["boxes"] == 0
    full = (boxes, np.array([0.9, 0.9, 0.3], dtype=np.float32), mine[2])  # at the most boxes: 0.3 is the cut
    assert graph.differences(full, (boxes[:2], full[1][:2], full[2][:2]))["boxes"] == 0.0


def _predictions_score_as_the_test_did(run, scenes, test_map, tmp_path):
    """kiln predict's COCO results (the dataset's image and category ids, boxes in the input's pixels), re-read
    against the test annotations, give the mAP the test reported; the CSV holds the same boxes."""
    import csv

    from torchmetrics.detection import MeanAveragePrecision

    out = tmp_path / "preds.json"
    assert main(["predict", str(run), str(scenes / "test" / "images"), "--out", str(out), "--overlay",
                 str(tmp_path / "overlays")]) == 0
    records = json.loads(out.read_text())
    from PIL import Image

    for image in sorted((scenes / "test" / "images").iterdir())[:4]:  # --overlay: the boxes drawn in, at its size
        drawn = Image.open(tmp_path / "overlays" / f"{image.stem}.png")
        boxed = any(r["file_name"] == image.name for r in records)
        assert drawn.size == Image.open(image).size
        assert (drawn.convert("RGB").tobytes() != Image.open(image).convert("RGB").tobytes()) == boxed
    assert records and {r["category_id"] for r in records} <= {3, 7} and all(r["score"] >= 0.05 for r in records)
    truth = json.loads((scenes / "annotations" / "test.json").read_text())
    ids = {image["file_name"].rsplit("/", 1)[-1]: image["id"] for image in truth["images"]}
    assert all(r["image_id"] == ids[r["file_name"]] for r in records)  # the COCO file's own image ids
    metric = MeanAveragePrecision(box_format="xywh", backend="pycocotools")
    for image in truth["images"]:
        mine = [r for r in records if r["image_id"] == image["id"]]
        theirs = [a for a in truth["annotations"] if a["image_id"] == image["id"]]
        metric.update([{"boxes": torch.tensor([r["bbox"] for r in mine]).reshape(-1, 4),
                        "scores": torch.tensor([r["score"] for r in mine]),
                        "labels": torch.tensor([r["category_id"] for r in mine], dtype=torch.long)}],
                      [{"boxes": torch.tensor([a["bbox"] for a in theirs], dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor([a["category_id"] for a in theirs], dtype=torch.long)}])
    assert float(metric.compute()["map"]) == pytest.approx(test_map, abs=2e-3)
    rows = list(csv.DictReader((tmp_path / "preds.csv").open())) if main(
        ["predict", str(run), str(scenes / "test" / "images"), "--out", str(tmp_path / "preds.csv")]) == 0 else []
    assert len(rows) == len(records) and rows[0]["category"] in ("disc", "square")


def _the_onnx_export_answers_the_same_boxes(run, scenes, tmp_path, capsys, monkeypatch):
    """kiln export --format onnx: one image at a time, NMS inside, checked on the test images' boxes by kiln export
    itself; kiln predict and kiln.load on the file give the run's own boxes (the score threshold, the most boxes and
    the dataset's category ids ride in its metadata); the graph formats torch.export cannot follow are refused."""
    import kiln

    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert "largest output difference" in capsys.readouterr().out
    meta = json.loads((run / "model.onnx.json").read_text())
    assert meta["outputs"] == ["boxes", "scores", "labels"] and meta["input"]["shape"][0] == meta["batch_size"] == 1
    assert meta["parity"]["boxes"] <= 0.01 and meta["parity"]["scores"] <= 1e-4 and meta["parity"]["labels"] == 0
    assert meta["category_ids"][1:] == [3, 7]
    images = str(scenes / "test" / "images")
    assert main(["predict", str(run / "model.onnx"), images, "--out", str(tmp_path / "onnx.json")]) == 0
    assert "collapsed" not in capsys.readouterr().err  # 12 images whose boxes name both classes: no false alarm
    mine, theirs = json.loads((tmp_path / "preds.json").read_text()), json.loads((tmp_path / "onnx.json").read_text())
    confident = [r for r in mine if r["score"] >= 0.1]  # below, near-tied boxes may fall either side of the cut
    assert confident and abs(len(theirs) - len(mine)) <= len(mine) // 100
    for a in confident:  # each of the run's boxes, found by the export: same image and class, same place and score
        same = [b for b in theirs if (b["file_name"], b["category_id"]) == (a["file_name"], a["category_id"])]
        b = min(same, key=lambda b: max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])))
        assert b["bbox"] == pytest.approx(a["bbox"], abs=0.02) and b["score"] == pytest.approx(a["score"], abs=1e-4)
    # --set: the run's boxes at a higher score threshold (what the console wants; mAP wants them all)
    assert main(["predict", str(run), images, "--set", "task.score_threshold=0.5", "--out", str(tmp_path / "c.json")]) == 0
    sure = json.loads((tmp_path / "c.json").read_text())
    assert sure and len(sure) < len(mine) and all(r["score"] >= 0.5 for r in sure)
    assert [r for r in mine if r["score"] >= 0.5] == sure
    assert main(["predict", str(run / "model.onnx"), images, "--set", "task.score_threshold=0.5"]) == 2
    assert "settings are fixed in its metadata" in capsys.readouterr().err
    found = kiln.load(run / "model.onnx").predict(sorted((scenes / "test" / "images").iterdir())[0])
    assert [b["bbox"] for b in found[0].detail] == [r["bbox"] for r in theirs if r["file_name"] == "test0000.png"]
    assert main(["export", str(run), "--format", "exported"]) == 2  # refused up front, naming what does work
    assert "--format onnx or safetensors writes it" in capsys.readouterr().err and not (run / "model.pt2").exists()
    from kiln.commands import export as exporting

    real = exporting.exported_runner
    monkeypatch.setattr(exporting, "exported_runner",  # an export that loses each image's best box fails the check
                        lambda path, fmt: (lambda *x: tuple(o[1:] for o in real(path, fmt)(*x))))
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "lossy.onnx")]) == 1
    err = capsys.readouterr().err
    assert "kiln: check failed: the onnx export does not match the PyTorch model (boxes: " in err
    assert not (tmp_path / "lossy.onnx").exists()


def test_a_resumed_detection_run_ends_bit_exact(tmp_path, scenes):
    """Stopped mid-epoch 1 and resumed: the flips and the detector's own random sampling replay."""
    from kiln.config import load_config

    def config_for(folder):
        args = _args(tmp_path, scenes, "trainer.epochs=2", "trainer.test_after_fit=false", f"log.dir={tmp_path / folder}")
        return load_config(args[1], args[2:])

    assert_resumes_bit_exact(config_for, stop_at=3)


def _edit_coco(root, change):
    path = root / "annotations" / "train.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _first_box(data, **values):
    data["annotations"][0].update(values)


@pytest.mark.parametrize("change, message", [
    (lambda d: _first_box(d, image_id=999), "annotation 1: names image 999, which the file does not list"),
    (lambda d: _first_box(d, category_id=5), "annotation 1: names category 5, which the categories do not list"),
    (lambda d: _first_box(d, bbox=[10, 10, 0, 5]), "annotation 1: has a box of zero size"),
    (lambda d: _first_box(d, bbox=[50, 50, 40, 40]), "annotation 1: has a box [50, 50, 40, 40] outside its 64x64 image"),
])
def test_a_bad_coco_annotation_is_exit_2_naming_the_file(tmp_path, scenes, capsys, change, message):
    import shutil

    root = tmp_path / "boxes"
    shutil.copytree(scenes, root)
    _edit_coco(root, change)
    assert main(_args(tmp_path, root, "trainer.epochs=1")) == 2
    err = capsys.readouterr().err
    assert message in err and "annotations/train.json" in err and "data.on_bad_row=skip" in err


def test_a_yolo_line_with_the_wrong_field_count_is_exit_2_naming_the_line(tmp_path, scenes, capsys):
    import shutil

    root = tmp_path / "boxes"
    shutil.copytree(scenes, root)
    (root / "train" / "labels" / "train0000.txt").write_text("0 0.5 0.5 0.2\n")
    assert main(_args(tmp_path, root, "data.name=yolo_detection", "trainer.epochs=1")) == 2
    assert "train0000.txt, line 1: 4 fields; a YOLO line is `class cx cy w h` (5 fields)" in capsys.readouterr().err


def test_inspect_draws_each_images_boxes_on_it():
    from kiln.tasks.detection import DetectionTask

    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    shown = DetectionTask.overlay(images.numpy(), targets, 3)
    assert shown[0, :, 4, 10].tolist() == [255, 255, 0]  # the box's top edge, in yellow
    assert shown[0, :, 12, 12].tolist() == [0, 0, 0] and not shown[1].any()  # inside it, and an image without one


def test_two_processes_score_the_test_split_as_one(tmp_path, scenes):
    """mAP is a list of every image's boxes, gathered from the ranks (not a sum): two processes scoring their
    shards of the test split must give what one process gives on all of it."""
    from conftest import run_cli

    # one image per evaluation batch: each image gets the same outputs in either run (batched convolutions differ in
    # the last bits with the batch, moving a barely trained detector's borderline boxes across its score threshold)
    briefly = ("trainer.epochs=1", "trainer.limit_train_batches=3", "data.eval_batch_size=1")
    out = run_cli(*_args(tmp_path, scenes, *briefly), "--run-dir",
                  tmp_path / "ddp", "--nproc", "2", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())
    assert main(["test", str(tmp_path / "ddp")]) == 0
    one = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())
    assert two["num_samples"] == one["num_samples"] == 12
    # the same images in the same order (a barely trained detector's mAP changes with the order: ties in scores)
    assert two["map"] == pytest.approx(one["map"], abs=1e-6) and two["map_50"] == pytest.approx(one["map_50"], abs=1e-6)


def test_tune_searches_a_detector_by_its_val_map(tmp_path, scenes):
    """kiln tune on the shipped detection config: each trial a detector run scored by val/map (checked to exist
    before the search), ranked by it; best.yaml holds the better trial's settings."""
    import csv

    import yaml

    from kiln.commands.tune.runner import run_tune

    base = {"base": str(ROOT / "configs" / "detection_coco.yaml"),
            "data": {"root": str(scenes), "image_size": 64, "batch_size": 8},
            "trainer": {"epochs": 2, "test_after_fit": False},
            "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "metric": "val/map", "mode": "max", "trials": 2, "sampler": "grid", "pruner": "none",
        "space": {"optim.lr": [0.00001, 0.003]}}))
    tune_dir = run_tune(tmp_path / "tune.yaml", [])
    rows = list(csv.DictReader((tune_dir / "results.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "complete"]
    maps = [float(r["val/map"]) for r in rows]
    assert maps == sorted(maps, reverse=True) and maps[0] > maps[1]  # a learning rate 300x smaller learns less
    best = yaml.safe_load((tune_dir / "best.yaml").read_text())
    assert best["optim"]["lr"] == pytest.approx(float(rows[0]["param:optim.lr"])) == 0.003


@pytest.mark.parametrize("seed", range(6))
def test_boxes_move_with_the_pixels_under_crops_and_flips(seed):
    """data.augment's padding crop, resized crop and flip on a detection sample: each box that survives still
    encloses its square's pixels (to a pixel, the resize's blur aside); a box cut to nothing leaves with its label."""
    from kiln.config import DataConfig
    from kiln.data.detection import DetectionSamples, Scenes
    from kiln.data.joint import joint_augment

    image = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    squares = torch.tensor([[8.0, 10, 24, 30], [40, 36, 60, 58]])
    for x1, y1, x2, y2 in squares.int().tolist():
        image[0, :, y1:y2, x1:x2] = 255
    cfg = DataConfig(name="coco_detection", augment={"crop_padding": 6, "resized_crop": True, "scale": [0.3, 1.0],
                                                     "hflip": True})
    samples = DetectionSamples(Scenes(image, [squares], [torch.tensor([1, 2])]), torch.tensor([0]),
                               joint_augment(cfg, (64, 64), boxes=True))
    torch.manual_seed(seed)
    x, target = samples[0]
    assert x.shape == (3, 64, 64) and len(target["boxes"]) == len(target["labels"]) <= 2
    bright = x[0] > 0.5
    for box in target["boxes"]:
        x1, y1, x2, y2 = box.tolist()
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        inside = bright[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1]
        assert inside.float().mean() > 0.9  # the box lies on its square
    outside = bright.clone()
    for x1, y1, x2, y2 in target["boxes"].tolist():
        outside[max(int(y1) - 1, 0):int(y2) + 2, max(int(x1) - 1, 0):int(x2) + 2] = False
    assert outside.float().mean() < 0.01  # no square's pixels without their box


@pytest.mark.parametrize("option", ["data.augment.preset=trivialaugment", "data.augment.random_erasing=0.25"])
def test_augmentation_that_cannot_move_boxes_is_refused_before_training(tmp_path, scenes, capsys, option):
    assert main([*_args(tmp_path, scenes, option)]) == 2
    err = capsys.readouterr().err
    assert option.split("=")[0] in err and "without moving their boxes" in err and "resized_crop" in err


def test_cross_validation_of_a_detector_reports_its_map_per_fold(tmp_path, scenes, capsys):
    """kiln cv on detection: each fold's held-out mAP (a detector measures no loss in evaluation, so none is asked
    for); --test, which averages the folds' answers, is refused before any fold trains."""
    args = _args(tmp_path, scenes, "trainer.epochs=1")
    assert main(["cv", *args[1:], "--folds", "2", "--test"]) == 2
    assert "--test scores the ensemble" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert main(["cv", *args[1:], "--folds", "2"]) == 0
    summary = json.loads(next((tmp_path / "runs").rglob("cv.json")).read_text())
    assert summary["metrics"] == ["map", "map_50", "map_75"] and len(summary["folds"]) == 2
    assert all(0 <= fold["map"] <= fold["map_50"] <= 1 for fold in summary["folds"])


def test_a_detectors_last_checkpoints_average_and_test(tmp_path, scenes):
    """kiln average on a detector: its BatchNorm statistics are measured again by calling it as training does (with
    the targets: a torchvision detector in training mode refuses to run without them); the average then tests."""
    run = tmp_path / "run"
    assert main([*_args(tmp_path, scenes, "trainer.epochs=2", "trainer.checkpoint.keep_last_k=2",
                        "trainer.test_after_fit=false"), "--run-dir", str(run)]) == 0
    assert main(["average", str(run), "--last", "2"]) == 0
    assert (run / "checkpoints" / "averaged.pt").is_file()
    assert main(["test", str(run), "--checkpoint", "averaged"]) == 0
    assert json.loads((run / "test_metrics.json").read_text())["checkpoint"].endswith("averaged.pt")


def test_baseline_says_it_has_no_classical_detector_before_reading_the_data(tmp_path, capsys):
    assert main(["baseline", str(ROOT / "configs" / "detection_coco.yaml"), f"data.root={tmp_path / 'none'}"]) == 2
    assert "no classical model for task detection" in capsys.readouterr().err


def test_the_worst_images_are_those_below_the_best_score():
    from kiln.commands.worst import worst_of

    assert worst_of([1.0, 0.8, 1.0, 0.5, 1.0], 12) == [3, 1]  # perfect images are not among the worst
    assert worst_of([0.2, 0.9, 0.4], 1) == [0]
    assert worst_of([1.0, 1.0, 1.0], 2) == [0, 1] and worst_of([0.0, 0.0], 5) == [0, 1]  # all alike: the first n
