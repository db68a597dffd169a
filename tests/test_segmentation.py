"""task.name: segmentation on data.name: segmentation_folder — generated scenes with known masks: a U-Net learns
them well above a trivial predictor, per-class IoU is tested, a resumed run ends bit-exact, two processes score as
one; each bad input is exit 2 naming the file."""

import json

import pytest
import torch

from conftest import ROOT, assert_resumes_bit_exact, run_cli
from fakedata import SEGMENT_CLASSES, write_segmentation_folder
from kiln.cli import main


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_segmentation_folder(tmp_path_factory.mktemp("scenes"), n=160)


def _args(tmp_path, root, *overrides):
    return ["train", str(ROOT / "configs" / "segmentation_folder.yaml"), f"data.root={root}", "data.image_size=48",
            "model.args.channels=[8,16]", "data.batch_size=16", f"log.dir={tmp_path / 'runs'}", "log.progress=none",
            "log.tensorboard=false", *overrides]


def test_a_unet_learns_the_masks_and_tests_per_class_iou(tmp_path, scenes, capsys):
    assert main([*_args(tmp_path, scenes, "trainer.epochs=12"), "--run-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert results["task"] == "segmentation" and list(results["iou"]) == SEGMENT_CLASSES
    # predicting background everywhere: pixel accuracy ~0.85 but mIoU ~0.28 (background's IoU / 3)
    assert results["miou"] > 0.75 and min(results["iou"].values()) > 0.6, results
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "val/miou" in header and "train/pixel_acc" in header
    capsys.readouterr()
    assert main(["test", str(tmp_path / "run")]) == 0
    assert "miou" in capsys.readouterr().out

    # kiln predict writes one mask per input at its size; re-read, they score what the test reported
    masks = tmp_path / "masks"
    assert main(["predict", str(tmp_path / "run"), str(scenes / "test" / "images"), "--out", str(masks),
                 "--overlay", str(tmp_path / "overlays")]) == 0
    assert "collapsed" not in capsys.readouterr().err  # every mask's largest class is background: no false alarm
    import numpy as np
    from PIL import Image
    from torchmetrics.classification import MulticlassJaccardIndex

    iou = MulticlassJaccardIndex(3, average="macro")
    for truth in sorted((scenes / "test" / "masks").glob("*.png")):
        predicted = np.array(Image.open(masks / truth.name))
        assert predicted.shape == np.array(Image.open(truth)).shape
        iou.update(torch.from_numpy(predicted).long()[None], torch.from_numpy(np.array(Image.open(truth))).long()[None])
    assert float(iou.compute()) == pytest.approx(results["miou"], abs=1e-4)
    # --overlay: each input with its predicted mask blended in, at its size; background pixels left as they were
    for truth in sorted((scenes / "test" / "masks").glob("*.png"))[:4]:
        drawn = np.array(Image.open(tmp_path / "overlays" / truth.name).convert("RGB")).astype(int)
        source = next((scenes / "test" / "images").glob(f"{truth.stem}.*"))
        image = np.array(Image.open(source).convert("RGB")).astype(int)
        predicted = np.array(Image.open(masks / truth.name))
        assert drawn.shape == image.shape
        assert (drawn[predicted == 0] == image[predicted == 0]).all() and (drawn[predicted > 0] != image[predicted > 0]).any()

    # exported as ONNX, checked against the PyTorch model on real test images by kiln export itself
    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 0
    meta = json.loads((tmp_path / "run" / "model.onnx.json").read_text())
    assert meta["task"] == "segmentation" and meta["parity_max_abs_diff"] < 1e-4 and meta["input"]["crop"] is False


def test_a_resumed_segmentation_run_ends_bit_exact(tmp_path, scenes):
    """Stopped mid-epoch 1 and resumed: the crops and flips of the batches after it replay."""
    from kiln.config import load_config

    def config_for(folder):
        args = _args(tmp_path, scenes, "trainer.epochs=2", f"log.dir={tmp_path / folder}")
        return load_config(args[1], args[2:])

    assert_resumes_bit_exact(config_for, stop_at=5)


def test_two_processes_score_the_test_split_as_one(tmp_path, scenes):
    out = run_cli(*_args(tmp_path, scenes, "trainer.epochs=1"), "--run-dir", tmp_path / "ddp", "--nproc", "2",
                  timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())
    assert main(["test", str(tmp_path / "ddp")]) == 0
    one = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())
    assert two["num_samples"] == one["num_samples"] == 40
    assert two["miou"] == pytest.approx(one["miou"], abs=1e-6) and two["iou"] == pytest.approx(one["iou"], abs=1e-6)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)


def _break(root, how):
    from PIL import Image

    masks = root / "train" / "masks"
    if how == "size":
        Image.new("L", (20, 20), 0).save(masks / "scene0004.png")
    elif how == "value":
        mask = Image.open(masks / "scene0004.png").copy()
        mask.putpixel((0, 0), 7)
        mask.save(masks / "scene0004.png")
    else:
        (masks / "scene0004.png").unlink()


@pytest.mark.parametrize("how, message", [
    ("size", "mask {masks}/scene0004.png is 20x20 but its image scene0004.png is 48x48"),
    ("value", "mask {masks}/scene0004.png holds value(s) 7, outside the 3 classes 0..2 (255: ignore)"),
    ("missing", "scene0004.png has no mask"),
])
def test_a_bad_mask_is_exit_2_naming_the_file_or_skipped_on_request(tmp_path, scenes, capsys, how, message):
    import shutil

    root = tmp_path / "scenes"
    shutil.copytree(scenes, root)
    _break(root, how)
    assert main(_args(tmp_path, root, "trainer.epochs=1")) == 2
    assert message.format(masks=root / "train" / "masks") in capsys.readouterr().err
    assert main(_args(tmp_path, root, "trainer.epochs=1", "data.on_bad_row=skip")) == 0


def test_a_torchvision_segmentation_model_trains_on_the_folder(tmp_path, scenes):
    """torchvision's builders by name (no backbone weights are downloaded): their dict output's `out` is scored."""
    assert main([*_args(tmp_path, scenes, "trainer.epochs=1", "model.name=torchvision:lraspp_mobilenet_v3_large",
                        "model.args={}", "data.image_size=64"), "--run-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert 0 <= results["miou"] <= 1 and results["num_samples"] == 40


def test_a_segmentation_models_pytorch_unet_trains_on_the_folder_without_hidden_downloads(tmp_path, scenes, cli):
    pytest.importorskip("segmentation_models_pytorch", reason="make test installs the segmentation extra")
    unet = ["model.name=smp:Unet", "model.args={encoder_name: resnet18, encoder_depth: 3, "
            "decoder_channels: [32, 16, 8]}", "data.image_size=32"]
    assert main([*_args(tmp_path, scenes, "trainer.epochs=1", *unet), "--run-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert 0 <= results["miou"] <= 1 and set(results["iou"]) == {"background", "disc", "square"}
    refused = cli(*_args(tmp_path, scenes, *unet[:1], "model.args={encoder_weights: imagenet}"))
    assert refused.returncode == 2 and "model.download=true" in refused.stderr
    assert cli(*_args(tmp_path, scenes, "model.name=smp:Unnet")).returncode == 2


def test_inspect_blends_each_images_mask_into_it():
    from kiln.tasks.segmentation import SegmentationTask

    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, 2:4, 2:4] = 1
    mask[0, 6, 6] = 255  # ignored: left bare
    shown = SegmentationTask.overlay(images.numpy(), mask, 3)
    assert shown[0, :, 3, 3].any() and not shown[0, :, 0, 0].any() and not shown[0, :, 6, 6].any()


def test_the_report_shows_each_classs_iou(tmp_path, scenes):
    assert main([*_args(tmp_path, scenes, "trainer.epochs=1"), "--run-dir", str(tmp_path / "run")]) == 0
    assert main(["report", str(tmp_path / "run")]) == 0
    text = (tmp_path / "run" / "report.html").read_text()
    assert "<th>class</th><th>iou</th>" in text  # a table of each class's IoU
    assert all(f"<td>{name}</td>" in text for name in SEGMENT_CLASSES)
    assert "Worst test images" in text and (tmp_path / "run" / "figures" / "worst_images.png").is_file()


def test_each_images_iou_counts_the_classes_it_or_its_prediction_has():
    from kiln.tasks.segmentation import SegmentationTask

    task = SegmentationTask.__new__(SegmentationTask)  # image_scores needs no settings
    truth = torch.zeros(2, 4, 4, dtype=torch.long)
    truth[:, :2] = 1  # the top half is class 1
    truth[1, 3, 3] = 255  # ignored
    perfect = torch.nn.functional.one_hot(truth.clamp(max=1), 3).permute(0, 3, 1, 2).float()
    half = perfect.clone()
    half[1, :, 0] = torch.tensor([0.0, 0.0, 1.0])[:, None]  # row 0 called class 2: wrong
    scores, masks = task.image_scores(torch.stack([perfect[0], half[1]]), truth)
    assert scores[0] == 1.0 and torch.equal(masks[0], truth[0])
    # image 2: class 0 IoU 7/7 (its ignored pixel left out), class 1 IoU 4/8, class 2 IoU 0/4
    assert scores[1] == pytest.approx((1 + 0.5 + 0) / 3)


@pytest.mark.parametrize("overrides, message", [
    (["task.name=multiclass"], "data.name gives a mask per image; task.name=multiclass reads one class per sample — "
                               "set task.name: segmentation"),
    (["data.name=fashion_mnist", "data.root=null"], "task.name=segmentation reads its targets from a segmentation "
                                                    "folder (data.name: segmentation_folder)"),
])
def test_masks_and_one_class_per_sample_do_not_mix(tmp_path, scenes, capsys, overrides, message):
    assert main(_args(tmp_path, scenes, "trainer.epochs=1", *overrides)) == 2
    assert message in capsys.readouterr().err


def test_an_auxiliary_head_joins_the_training_loss_only():
    from kiln.config import SegmentationTaskConfig
    from kiln.tasks.segmentation import SegmentationTask

    class TwoHeads(torch.nn.Module):  # as torchvision's FCN / DeepLabV3 with aux_loss=True return
        def forward(self, x):
            return {"out": x[:, :3] * 2, "aux": x[:, 3:] - 1}

    task = SegmentationTask(SegmentationTaskConfig(aux_weight=0.4), 3)
    x, masks = torch.randn(2, 6, 5, 5), torch.randint(0, 3, (2, 5, 5))
    out = task.outputs(TwoHeads(), x, masks)  # training: targets given
    expected = torch.nn.functional.cross_entropy(x[:, :3] * 2, masks) + 0.4 * torch.nn.functional.cross_entropy(
        x[:, 3:] - 1, masks)
    assert torch.allclose(out, x[:, :3] * 2) and torch.allclose(task.objective(out, masks), expected)
    evaluated = task.outputs(TwoHeads(), x)  # evaluation: the main head alone
    assert torch.allclose(task.objective(evaluated, masks), torch.nn.functional.cross_entropy(x[:, :3] * 2, masks))


@pytest.mark.parametrize("seed", range(6))
def test_masks_move_with_the_pixels_under_crops_and_flips(seed):
    """data.augment's padding crop, resized crop and flip on a segmentation sample: the mask still marks exactly
    the square's pixels (nearest for the mask, the resize's blur at the edge aside); padding is ignore (255)."""
    from kiln.config import DataConfig
    from kiln.data.info import DataInfo
    from kiln.data.joint import joint_augment
    from kiln.data.segmentation import IGNORE, Pairs, SegmentationSamples

    image = torch.zeros(1, 3, 48, 48, dtype=torch.uint8)
    mask = torch.zeros(1, 48, 48, dtype=torch.uint8)
    image[0, :, 10:30, 14:40] = 255
    mask[0, 10:30, 14:40] = 1
    cfg = DataConfig(name="segmentation_folder", augment={"crop_padding": 8, "resized_crop": True,
                                                          "scale": [0.4, 1.0], "hflip": True})
    info = DataInfo("segmentation_folder", "image", 2, ["background", "square"], image_size=(48, 48), mean=(0.0,) * 3,
                    std=(1.0,) * 3)
    samples = SegmentationSamples(Pairs(image, mask), torch.tensor([0]), info, joint_augment(cfg, (48, 48), False))
    torch.manual_seed(seed)
    x, y = samples[0]
    assert x.shape == (3, 48, 48) and y.shape == (48, 48)
    labelled = y != IGNORE
    bright, marked = x[0][labelled] > 0.5, y[labelled] == 1
    assert (bright == marked).float().mean() > 0.93  # the square's pixels and its class agree (edges blur)
    assert set(y.unique().tolist()) <= {0, 1, IGNORE}


def test_augmentation_that_cannot_move_masks_is_refused_before_training(tmp_path, scenes, capsys):
    assert main([*_args(tmp_path, scenes, "data.augment.preset=randaugment")]) == 2
    assert "data.augment.preset would change the images without moving their masks" in capsys.readouterr().err


def test_baseline_says_it_has_no_classical_segmenter_before_reading_the_data(tmp_path, capsys):
    assert main(["baseline", str(ROOT / "configs" / "segmentation_folder.yaml"), f"data.root={tmp_path / 'no'}"]) == 2
    assert "no classical model for task segmentation" in capsys.readouterr().err
