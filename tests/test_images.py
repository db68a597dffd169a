"""The user's own images: image folders and CSVs, decoding, the decode-once cache, per-image augmentation."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import only_run, write_config
from fakedata import SHAPE_CLASSES, draw_shape_image, write_cifar_binary, write_image_csv, write_image_folder
from kiln.cli import main
from kiln.config import DataConfig, build_config
from kiln.core.errors import KilnError
from kiln.core.state import load_checkpoint
from kiln.data import DataRequest, build_data
from kiln.data.image_store import ImageStore, decode
from kiln.data.transforms import Augment, BatchTransform
from kiln.train import session
from kiln.train.callbacks import LambdaCallback

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("shapes"), n=600)


def _config(tmp_path: Path, root: Path, **data) -> dict:
    return {"name": "shapes", "seed": 0,
            "data": {"name": "image_folder", "root": str(root), "image_size": 32, "batch_size": 32,
                     "val_split": 0.15, "test_split": 0.2, "augment": {"scale": [0.5, 1.0]}, **data},
            "model": {"name": "cnn", "args": {"channels": [16, 32, 64]}},
            "optim": {"name": "adamw", "lr": 0.005}, "schedule": {"name": "onecycle"},
            "trainer": {"epochs": 25},
            "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_a_colour_folder_is_learnt_then_tested_and_predicted_through_the_cli(tmp_path, shapes, monkeypatch, capsys):
    config = write_config(tmp_path, _config(tmp_path, shapes))
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    assert main(["train", str(config)]) == 0  # in process: test_train_cli runs the real entry point
    assert "skipped 1 hidden, 1 not an image (.txt)" in capsys.readouterr().err
    run = only_run(tmp_path / "runs")
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["acc"] >= 0.9, metrics["acc"]  # colour and shape at varying positions and scales
    assert metrics["class_names"] == SHAPE_CLASSES
    saved = (run / "config.yaml").read_text()
    assert "channels: 3" in saved and "mean:" in saved  # resolved settings are recorded with the run

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(shapes / "red_square"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 150 and set(rows[0]) >= {"file", "label", "probability", "top_k"}
    assert sum(r["label"] == "red_square" for r in rows) >= 130

    other = tmp_path / "other"
    shutil.copytree(shapes / "blue_disc", other / "blue_disc")
    assert main(["test", str(run), f"data.root={other}"]) == 0
    scored = json.loads((run / "test_metrics-other.json").read_text())  # the run's own results stay the run's
    assert scored["num_samples"] == len(list(other.rglob("*.*"))) - 2


def test_training_on_a_folder_resumes_bit_exactly(tmp_path, shapes):
    def cfg(folder):
        raw = _config(tmp_path, shapes, loader="dataloader")
        raw["trainer"]["epochs"] = 2
        raw["log"]["dir"] = str(tmp_path / folder)
        return build_config(raw)

    full = session.train(cfg("full"), quiet=True)

    def stop(trainer):
        if trainer.state.step == 5:
            trainer.stop_requested = True

    cut = cfg("cut")
    with pytest.raises(Exception, match="--resume"):
        session.train(cut, quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    resumed = session.train(cut, resume=only_run(tmp_path / "cut"), quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_image_csv_trains_and_reports_a_missing_file_with_its_line(tmp_path):
    root = write_image_csv(tmp_path / "csvdata", n=64)
    raw = _config(tmp_path, root, name="image_csv", val_split=8, test_split=0)
    raw["trainer"]["epochs"] = 1
    result = session.train(build_config(raw), quiet=True)
    assert result.test_metrics["num_samples"] == 21

    with open(root / "train.csv", "a") as f:
        f.write("images/nowhere.png,red_disc\n")
    with pytest.raises(KilnError, match=r"train.csv, line 66: image .*nowhere.png not found.*on_bad_row=skip"):
        build_data(DataConfig(name="image_csv", root=root, image_size=16), DataRequest(seed=0, device=CPU))
    data = build_data(DataConfig(name="image_csv", root=root, image_size=16, on_bad_row="skip", val_split=0),
        DataRequest(seed=0, device=CPU))
    assert data.sizes["train"] == 64


# --------------------------------------------------------------------------- layouts and splits

def test_train_val_test_folders_are_the_splits_and_kiln_splits_a_class_folder_stratified(tmp_path):
    root = write_image_folder(tmp_path / "split", n=40, layout="splits", extras=False)
    (root / "val").rename(root / "valid")
    data = build_data(DataConfig(name="image_folder", root=root, image_size=16), DataRequest(seed=0, device=CPU))
    assert data.sizes == {"train": 40, "val": 10, "test": 10}
    assert data.info.class_names == SHAPE_CLASSES and data.info.in_channels == 3

    flat = write_image_folder(tmp_path / "flat", n=80, extras=False)
    data = build_data(DataConfig(name="image_folder", root=flat, image_size=16, val_split=0.2, test_split=0.25),
        DataRequest(seed=0, device=CPU))
    assert data.sizes == {"train": 48, "val": 12, "test": 20}  # the validation share is of what the test left
    for split, per_class in (("val", 3), ("test", 5)):  # the same share of every class
        labels = torch.cat([y for _, y in data.require(split).epoch(0)])
        assert torch.bincount(labels).tolist() == [per_class] * 4


def test_unset_image_size_and_channels_come_from_the_training_images(tmp_path):
    root = tmp_path / "gray"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i, size in enumerate([(50, 70), (60, 90), (100, 61)]):
            Image.new("L", size, 40 * i).save(root / c / f"{i}.png")
    cfg = DataConfig(name="image_folder", root=root, val_split=0)
    data = build_data(cfg, DataRequest(seed=0, device=CPU))
    derived = data.derived  # the settings the config left unset, as the run records them
    assert derived["channels"] == 1 and derived["image_size"] == 64  # median short side 60 -> 64 (a multiple of 8)
    assert cfg.channels is None  # the config given stays as it was
    assert data.info.in_channels == 1 and data.info.image_size == (64, 64)


def test_the_run_records_what_kiln_derived_apart_from_what_was_given_and_a_resume_keeps_it(tmp_path, shapes):
    from kiln.config import recorded_derivations

    raw = _config(tmp_path, shapes, image_size=None) | {  # 3 steps of 3 batches: 1 epoch
        "trainer": {"epochs": 5, "max_steps": 3, "limit_train_batches": 3, "limit_val_batches": 1,
                    "test_after_fit": False}}
    given = build_config(raw)
    before = given.model_dump()
    result = session.train(given, quiet=True)
    assert given.model_dump() == before  # nothing writes into the config it was given
    text = (result.run_dir / "config.yaml").read_text()
    derived = recorded_derivations(text)
    assert {"data.image_size", "data.channels", "data.class_names", "data.mean", "data.std"} <= set(derived)
    assert derived["data.image_size"] == "derived from the training data"
    assert derived["trainer.epochs"] == "derived from the training steps" and "data.batch_size" not in derived
    assert "#   trainer.precision: 32 on cpu\n" in text and "#   trainer.device: cpu on this machine\n" in text
    saved = build_config(yaml.safe_load(text))
    assert saved.data.image_size == result.config.data.image_size and saved.data.channels == 3
    assert saved.data.mean == result.config.data.mean is not None
    resumed = session.train(saved.with_values({"trainer.epochs": 2, "trainer.max_steps": None}),
                            resume=result.run_dir, quiet=True)
    assert recorded_derivations((resumed.run_dir / "config.yaml").read_text()) == derived  # still recorded


@pytest.mark.parametrize("make, message", [
    (lambda r: (r / "a").mkdir(parents=True), "class folder .*a has no images"),
    (lambda r: r.mkdir(), "no class folders in"),
    (lambda r: (r / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated"), r"cannot read image .*bad.jpg"),
])
def test_bad_folders_are_explained(tmp_path, make, message):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "b").mkdir()
    draw_shape_image(0, np.random.default_rng(0), (40, 40)).save(root / "b" / "ok.png")
    if "no class" in message:
        shutil.rmtree(root)
    elif "bad.jpg" in message:
        (root / "a").mkdir()
    make(root)
    with pytest.raises(KilnError, match=message):
        build_data(DataConfig(name="image_folder", root=root, val_split=0), DataRequest(seed=0, device=CPU))


def test_a_truncated_image_is_named_and_skipped_when_asked(tmp_path):
    root = write_image_folder(tmp_path / "p", n=8, extras=False)
    good = root / "red_disc" / "img0002.png"
    data = good.read_bytes()
    (root / "red_disc" / "cut.png").write_bytes(data[: len(data) // 2])
    cfg = dict(name="image_folder", root=root, val_split=0, image_size=16, channels=3)
    with pytest.raises(KilnError, match=r"(?s)cannot be decoded.*cut.png"):
        build_data(DataConfig(**cfg), DataRequest(seed=0, device=CPU))
    assert build_data(DataConfig(**cfg, on_bad_row="skip"), DataRequest(seed=0, device=CPU)).sizes["train"] == 8


def test_testing_on_a_folder_with_a_class_the_run_does_not_know_is_refused(tmp_path, shapes):
    other = tmp_path / "other"
    shutil.copytree(shapes / "red_disc", other / "zebra")
    cfg = DataConfig(name="image_folder", root=other, class_names=SHAPE_CLASSES, image_size=16)
    with pytest.raises(KilnError, match="'zebra' are not among the classes"):
        build_data(cfg, DataRequest(seed=0, device=CPU, splits=("test",)))


# --------------------------------------------------------------------------- decoding

def test_every_image_mode_decodes_to_one_rgb_layout(tmp_path):
    img = Image.new("RGB", (60, 40), (10, 200, 30))
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    clear.save(tmp_path / "clear.png")
    img.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    img.convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGB", (60, 40), (255, 0, 0)).save(tmp_path / "gif.gif")
    rotated = Image.new("RGB", (60, 40), (0, 0, 0))
    rotated.paste((255, 255, 255), (0, 0, 30, 40))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the white half ends up on top
    rotated.save(tmp_path / "exif.jpg", exif=exif, quality=95)

    assert decode(tmp_path / "clear.png", 3, (8, 8)).min() == 255  # transparency on white
    assert tuple(decode(tmp_path / "palette.png", 3, (8, 8))[:, 4, 4]) == pytest.approx((10, 200, 30), abs=8)
    assert decode(tmp_path / "cmyk.jpg", 3, (8, 8)).shape == (3, 8, 8)
    assert decode(tmp_path / "deep.png", 3, (8, 8)).min() == 255  # 16-bit white scaled, not clipped
    assert decode(tmp_path / "gif.gif", 1, (8, 8)).shape == (1, 8, 8)
    upright = decode(tmp_path / "exif.jpg", 1, (60, 40))[0]  # (H=60, W=40) once rotated
    assert upright[:20].mean() > 200 and upright[40:].mean() < 50


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, caplog):
    root = write_image_folder(tmp_path / "p", n=8, extras=False)
    paths = sorted(root.rglob("*.png")) + sorted(root.rglob("*.jpg"))
    first = ImageStore.open_or_build(paths, 3, (16, 16), workers=2)
    caplog.clear()
    with caplog.at_level("INFO", logger="kiln"):
        again = ImageStore.open_or_build(paths, 3, (16, 16), workers=2)
    assert "reusing" in caplog.text and torch.equal(first.images, again.images)

    Image.new("RGB", (30, 30), (0, 0, 0)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # a new mtime even on a coarse clock
    rebuilt = ImageStore.open_or_build(paths, 3, (16, 16), workers=2)
    assert rebuilt.images[0].max() == 0 and torch.equal(rebuilt.images[1:], first.images[1:])
    assert len(list((tmp_path / "cache" / "images").glob("*.u8"))) == 1  # the stale store is gone


def test_decoding_per_sample_gives_the_same_batches_as_the_cache(tmp_path, shapes):
    batches = {}
    for cache in ("on", "off"):
        cfg = DataConfig(name="image_folder", root=shapes, image_size=24, cache=cache, loader="dataloader",
                         mean=[0.5], std=[0.25], val_split=0)
        train = build_data(cfg, DataRequest(seed=4, device=CPU, splits=("train",))).require("train")
        batches[cache] = next(iter(train.epoch(1)))
    assert torch.equal(batches["on"][0], batches["off"][0]) and torch.equal(batches["on"][1], batches["off"][1])


# --------------------------------------------------------------------------- augmentation

def test_random_resized_crops_and_flips_are_drawn_per_image_and_repeatable():
    image = torch.arange(3 * 40 * 40, dtype=torch.float32).reshape(1, 3, 40, 40).remainder(251).to(torch.uint8)
    batch = image.expand(16, -1, -1, -1).contiguous()
    t = BatchTransform([0.5, 0.5, 0.5], [0.2, 0.2, 0.2], Augment(hflip=True, resized_crop=True), size=(24, 24))
    out = t(batch, torch.Generator().manual_seed(1))
    assert out.shape == (16, 3, 24, 24)
    assert len({tuple(x.flatten()[:50].tolist()) for x in out}) == 16  # no two images share a crop
    assert torch.equal(out, t(batch, torch.Generator().manual_seed(1)))  # a pure function of the seed

    plain = BatchTransform([0.5, 0.5, 0.5], [0.2, 0.2, 0.2], None, size=(24, 24))(batch)
    assert torch.allclose(plain[0], ((image[0, :, 8:32, 8:32].float() / 255) - 0.5) / 0.2, atol=1e-5)  # centre crop


# --------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("name, hundred, train", [("cifar10", False, 100), ("cifar100", True, 20)])
def test_cifar_binary_records_are_read_plane_by_plane(tmp_path, name, hundred, train):
    root = write_cifar_binary(tmp_path / name, hundred=hundred)
    data = build_data(DataConfig(name=name, root=root, val_split=0, loader="resident"), DataRequest(seed=0, device=CPU))
    assert data.sizes == {"train": train, "test": 20}
    assert data.info.in_channels == 3 and data.info.image_size == (32, 32) and len(data.info.mean) == 3
    images = data.require("test").images  # the uint8 store, in file order
    assert images[7, 0].unique().tolist() == [7] and images[7, 2].unique().tolist() == [200]
    assert data.require("test").labels[7] == 7


def test_a_cifar_file_of_the_wrong_size_is_refused(tmp_path):
    root = write_cifar_binary(tmp_path / "c")
    with open(root / "cifar-10-batches-bin" / "test_batch.bin", "ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(KilnError, match="not a whole number of 3073-byte records"):
        build_data(DataConfig(name="cifar10", root=root), DataRequest(seed=0, device=CPU, splits=("test",)))


# --------------------------------------------------------------------------- transforms from the config

def _with_transforms(root, **transforms):
    return DataConfig(name="image_folder", root=root, image_size=24, val_split=8, channels=3, mean=[0.5],
                      std=[0.25], transforms=transforms)


@pytest.mark.parametrize("entry, message", [
    ({"name": "RandomResizdCrop", "size": 24}, r"unknown transform 'RandomResizdCrop' — did you mean "
                                               r"RandomResizedCrop\?.*ColorJitter"),
    ({"name": "RandomResizedCrop", "sise": 24}, r"RandomResizedCrop\(sise=24\) failed.*Its signature: "
                                                r"RandomResizedCrop\(size"),
    ({"name": "RandomCrop", "size": 20}, r"gives \(3, 20, 20\) images; the model takes \(3, 24, 24\)"),
    ({"name": "Normalize", "mean": [0.5], "std": [0.2]}, "kiln normalises after your transforms"),
])
def test_a_bad_transform_list_is_refused_before_training(tmp_path, entry, message):
    root = write_image_folder(tmp_path / "p", n=16, extras=False)
    with pytest.raises(KilnError, match=message):
        build_data(_with_transforms(root, train=[entry]), DataRequest(seed=0, device=CPU))


def test_config_transforms_draw_per_image_and_repeat_on_resume(tmp_path):
    root = write_image_folder(tmp_path / "p", n=16, extras=False)
    first = tmp_path / "p" / "blue_disc" / "img0000.png"
    for i in range(40):  # one class of identical images: any difference comes from the transforms
        shutil.copy(first, root / "blue_disc" / f"same{i:02d}.png")
    cfg = _with_transforms(root, train=[{"name": "RandomResizedCrop", "size": 24, "scale": [0.2, 1.0]},
                                        {"name": "ColorJitter", "brightness": 0.5}],
                           eval=[{"name": "CenterCrop", "size": 24}])
    data = build_data(cfg.with_values({"batch_size": 64}), DataRequest(seed=0, device=CPU))
    x, y = next(iter(data.require("train").epoch(2)))
    same = x[y == 0]
    assert len({tuple(img.flatten()[:40].tolist()) for img in same}) > 0.9 * len(same)
    again, _ = next(iter(build_data(cfg, DataRequest(seed=0, device=CPU)).require("train").epoch(2)))
    assert torch.equal(x, again)
    assert next(iter(data.require("val").epoch(0)))[0].shape[1:] == (3, 24, 24)


def test_inspect_batch_writes_what_the_model_sees_with_class_counts(tmp_path, shapes):
    from kiln.commands.inspect_target import show_batch

    config = write_config(tmp_path, _config(tmp_path, shapes))
    view = show_batch(config, [], "val", tmp_path / "out")
    assert view.figure_path == tmp_path / "out" / "batch_val.png" and view.figure_path.stat().st_size > 10_000
    assert any(line.startswith("class counts: blue_disc ") for line in view.lines)
    assert any("per channel, as the model sees it: mean" in line for line in view.lines)


def test_the_old_text_on_bad_row_key_moves_to_data_on_bad_row_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="kiln"):
        cfg = build_config({"data": {"name": "text_csv", "text": {"on_bad_row": "skip"}}})
    assert cfg.data.on_bad_row == "skip" and cfg.data.text.on_bad_row == "skip"
    assert "data.text.on_bad_row is deprecated: use data.on_bad_row=skip" in caplog.text
    with pytest.raises(KilnError, match=r"disagree; set data.on_bad_row only"):
        build_config({"data": {"on_bad_row": "error", "text": {"on_bad_row": "skip"}}})
    assert build_config({"data": {"on_bad_row": "skip"}}).data.text.on_bad_row == "skip"


def test_the_gpu_resampling_of_crops_matches_the_cpu_one():
    """The GPU path (one grid_sample for the batch) samples the same points as the CPU path (one interpolate per
    image): compared here on the CPU, enlarging crops (where antialiasing does nothing), away from the edges."""
    from kiln.data.transforms import resample_each, resample_grid

    x = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    boxes = tuple(torch.tensor(v, dtype=torch.float32) for v in ([0, 5, 10, 3], [2, 0, 7, 9], [20, 30, 16, 24],
                                                                  [16, 10, 30, 20]))
    a = resample_each(x.float(), boxes, (48, 48))
    b = resample_grid(x, boxes, (48, 48))
    assert torch.allclose(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-3)


def test_train_and_val_folders_without_a_test_folder_train_and_skip_the_final_test(tmp_path):
    root = write_image_folder(tmp_path / "split", n=32, layout="splits", extras=False)
    shutil.rmtree(root / "test")
    raw = _config(tmp_path, root, image_size=16, test_split=0)
    raw["trainer"]["epochs"] = 1
    result = session.train(build_config(raw), quiet=True)
    assert result.test_metrics is None and (result.run_dir / "checkpoints" / "best.pt").is_file()


def test_the_shipped_transfer_config_fine_tunes_on_a_folder_with_imagenet_normalisation(tmp_path, monkeypatch,
                                                                                         shapes):
    from torchvision.models import ResNet18_Weights, resnet18

    from conftest import ROOT
    from kiln.config import IMAGENET_MEAN, load_config

    overrides = [f"data.root={shapes}", "data.image_size=48", "data.train_subset=64", "data.batch_size=32",
                 "data.num_workers=0", "trainer.epochs=1", "trainer.test_after_fit=false",
                 f"log.dir={tmp_path / 'runs'}", "log.progress=none", "log.tensorboard=false"]
    cfg = load_config(ROOT / "configs" / "transfer_resnet18_folder.yaml", overrides)
    from kiln.models.preprocessing import with_weights_preprocessing

    resolved = with_weights_preprocessing(cfg).data  # from the weights' own metadata; the given size wins
    assert resolved.mean == list(IMAGENET_MEAN) and resolved.crop_fraction == 0.875 and resolved.image_size == 48
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(KilnError, match=r"resnet18-f37072fd.pth"):  # says exactly which file, and where
        session.train(cfg, quiet=True)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet18(weights=None).state_dict(), cached)  # stands in for the ImageNet weights
    result = session.train(load_config(ROOT / "configs" / "transfer_resnet18_folder.yaml", overrides), quiet=True)
    assert "0.485" in (result.run_dir / "config.yaml").read_text()


def test_a_class_map_file_sets_the_label_order(tmp_path):
    root = write_image_folder(tmp_path / "p", n=8, extras=False)
    order = list(reversed(SHAPE_CLASSES))
    (tmp_path / "classes.txt").write_text("# one class per line\n" + "\n".join(order) + "\n")
    data = build_data(DataConfig(name="image_folder", root=root, image_size=16, val_split=0,
                                 class_map=tmp_path / "classes.txt"), DataRequest(seed=0, device=CPU))
    assert data.info.class_names == order


def test_a_cifar_download_is_checked_against_its_md5_and_only_its_files_extracted(tmp_path):
    import dataclasses
    import hashlib
    import tarfile

    from kiln.data.cifar import CIFAR10

    src = write_cifar_binary(tmp_path / "src")
    (src / "cifar-10-batches-bin" / "readme.html").write_text("not extracted")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = dataclasses.replace(CIFAR10, url=archive.as_uri(), md5=md5)
    spec.download(tmp_path / "data")
    assert spec.find(tmp_path / "data") == tmp_path / "data" / "cifar-10-batches-bin"
    assert not (tmp_path / "data" / "cifar-10-batches-bin" / "readme.html").exists()
    with pytest.raises(ValueError, match=r"expected 0+: the download is corrupt"):
        dataclasses.replace(CIFAR10, url=archive.as_uri(), md5="0" * 32).download(tmp_path / "again")


def test_yaml_on_off_and_a_rectangular_image_size_are_read_and_a_bad_size_named():
    import yaml

    cfg = build_config(yaml.safe_load("data: {cache: off, image_size: [24, 40]}"))  # YAML reads `off` as false
    assert cfg.data.cache == "off" and tuple(cfg.data.image_size) == (24, 40)
    with pytest.raises(KilnError, match=r"'data.image_size': give one size in pixels \(64: square\)") as e:
        build_config({"data": {"image_size": 0}})
    assert "constrained" not in str(e.value)
