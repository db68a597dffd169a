"""Models of the field's libraries by name (torchvision:NAME, timm:NAME): built for the data's classes and
channels without a table of families, trained through the CLI, started from weights files, and the mistakes
refused before training. Everything offline: the weights are random, saved by the tests themselves."""

from __future__ import annotations

import pytest
import torch
import yaml

from fakedata import write_image_folder
from kiln.cli import main
from kiln.config import build_config, load_config
from kiln.core.errors import KilnError
from kiln.models import build_model
from kiln.models.freeze import head_prefix
from kiln.models.pretrained import load_pretrained

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four classes of generated photos and a decode cache shared by the module's runs."""
    root = tmp_path_factory.mktemp("photos")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KILN_CACHE", str(root / "cache"))
        yield write_image_folder(root / "images", n=40, extras=False)


def _config(tmp_path, photos, name: str, size: int | None = 32, **model) -> str:
    cfg = {"name": "lib", "data": {"name": "image_folder", "root": str(photos), "channels": 1,
                                   "batch_size": 4, "val_split": 0.2, "test_split": 0.2,
                                   **({"image_size": size} if size else {})},
           "model": {"name": name, **model}, "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.0},
           "schedule": {"name": "none"}, "trainer": {"fast_dev_run": True},
           "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}
    path = tmp_path / f"{name.replace(':', '_')}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


# One small member of each torchvision family with a different head or stem, trained two steps through the CLI
# on 1-channel images for 4 classes (the large members are built and stepped in-process below).
CLI_FAMILIES = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x0_5",
                "squeezenet1_1", "mnasnet0_5", "googlenet", "densenet121"]


@pytest.mark.parametrize("arch", CLI_FAMILIES)
def test_a_torchvision_family_trains_through_the_cli(tmp_path, photos, arch):
    assert main(["train", _config(tmp_path, photos, f"torchvision:{arch}")]) == 0
    run = next((tmp_path / "runs" / "lib").iterdir())
    assert main(["test", str(run)]) == 0  # rebuilt from the run: same head and stem


# The large ones and those with a fixed input size: built for 4 classes and 1 channel, one training step.
STEPPED = [("convnext_tiny", 32), ("swin_t", 32), ("vit_b_16", 32), ("inception_v3", 75), ("maxvit_t", 224)]


@pytest.mark.parametrize("arch, size", STEPPED)
def test_large_and_fixed_size_torchvision_models_are_built_for_the_data(arch, size):
    model = _build(f"torchvision:{arch}", size)
    x = torch.randn(2, 1, size, size)
    out = model.train()(x)
    assert out.shape == (2, 4)  # one output: Inception's auxiliary head is off
    out.sum().backward()
    head = head_prefix(model)
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith(head + "."))
    assert dict(model.named_modules())[head].weight.shape[0] == 4


def _build(name: str, size: int, channels: int = 1, **model):
    from kiln.data.info import DataInfo

    cfg = build_config({"model": {"name": name, **model}}).model
    info = DataInfo("x", "image", 4, list("abcd"), in_channels=channels, image_size=(size, size))
    return build_model(cfg, info)


def test_freezing_the_backbone_leaves_only_the_built_head_trainable(tmp_path, photos):
    from kiln.core.state import load_checkpoint
    from kiln.train import session
    from kiln.train.callbacks import Callback

    class Start(Callback):
        def on_fit_start(self, trainer):
            self.weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    start = Start()
    cfg = load_config(_config(tmp_path, photos, "torchvision:squeezenet1_1", freeze="backbone"))
    result = session.train(cfg, quiet=True, callbacks=[start])
    after = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["model"]
    moved = {k for k, v in start.weights.items() if v.is_floating_point() and not torch.equal(v, after[k])}
    assert moved == {"classifier.1.weight", "classifier.1.bias"}  # SqueezeNet's head is a 1x1 convolution


def test_a_timm_model_trains_and_tests(tmp_path, photos):
    assert main(["train", _config(tmp_path, photos, "timm:resnet10t")]) == 0
    assert main(["test", str(next((tmp_path / "runs" / "lib").iterdir()))]) == 0


def test_weights_from_safetensors_files_load_all_but_the_head(tmp_path):
    """A random torchvision ConvNeXt and a timm ViT saved as .safetensors: every backbone tensor loads, the head
    is new, and the backbone answers as the source did (a gray image as the RGB model saw it replicated)."""
    import torchvision
    from safetensors.torch import save_file

    source = torchvision.models.convnext_tiny(weights=None).eval()
    path = tmp_path / "convnext.safetensors"
    save_file(source.state_dict(), str(path))
    model = _build("torchvision:convnext_tiny", 32).eval()
    report = load_pretrained(model, build_config({"model": {"name": "torchvision:convnext_tiny",
                                                            "pretrained": str(path)}}).model)
    assert [n.split(" ")[0] for n in report.new] == ["classifier.2.weight", "classifier.2.bias"]
    assert report.adapted == ["features.0.0.weight: (96, 3, 4, 4) -> (96, 1, 4, 4)"] and not report.ignored
    gray = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.features(gray), source.features(gray.expand(-1, 3, -1, -1)), atol=1e-4)

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "vit.safetensors"
    save_file(vit.state_dict(), str(path))
    model = _build("timm:vit_tiny_patch16_224", 224, channels=3).eval()
    report = load_pretrained(model, build_config({"model": {"name": "timm:vit_tiny_patch16_224",
                                                            "pretrained": str(path)}}).model)
    assert sorted(n.split(" ")[0] for n in report.new) == ["head.bias", "head.weight"] and not report.adapted
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), vit.forward_features(x), atol=1e-5)


def test_missing_weights_name_where_kiln_looked_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = build_config({"model": {"name": "torchvision:resnet18", "pretrained": "torchvision"}}).model
    with pytest.raises(KilnError) as e:
        load_pretrained(_build("torchvision:resnet18", 32), cfg)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-") in str(e.value)
    assert "model.download=true" in str(e.value)  # nothing was downloaded
    assert not (tmp_path / "torch" / "hub" / "checkpoints").exists()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = build_config({"model": {"name": "timm:resnet10t", "pretrained": "timm"}}).model
    with pytest.raises(KilnError, match=r"timm weights resnet10t are not on this machine: looked in .* for "
                                        r"timm/resnet10t.*/model.safetensors.*model.download=true"):
        load_pretrained(_build("timm:resnet10t", 32), cfg)


@pytest.mark.parametrize("model, message", [
    ({"name": "torchvision:resnet18", "pretrained": "timm"}, "model.pretrained=timm needs a timm:NAME model"),
    ({"name": "timm:resnet10t", "pretrained": "torchvision"}, "model.name=timm:resnet10t is a timm model"),
    ({"name": "cnn", "pretrained": "timm"}, "model.name=cnn is kiln's own"),
])
def test_the_weights_keyword_must_match_the_models_library(model, message):
    with pytest.raises(KilnError, match=message):
        load_pretrained(_build(model["name"], 32, **({"args": {"channels": [4]}} if model["name"] == "cnn" else {})),
                        build_config({"model": model}).model)


def test_mistakes_are_refused_before_training(tmp_path, photos, capsys):
    with pytest.raises(KilnError, match=r"torchvision has no model 'resnt18' — did you mean torchvision:resnet18"):
        load_config(_config(tmp_path, photos, "torchvision:resnt18"))
    with pytest.raises(KilnError, match=r"did you mean 'torchvision:convnext_tiny'"):
        load_config(_config(tmp_path, photos, "convnext_tiny"))
    with pytest.raises(KilnError, match=r"timm has no model 'resnet10x' — did you mean timm:resnet10t"):
        _build("timm:resnet10x", 32)
    with pytest.raises(KilnError, match=r"model torchvision:maxvit_t cannot take 1x32x32 inputs .* data.image_size"):
        _build("torchvision:maxvit_t", 32)
    with pytest.raises(KilnError, match=r"does not take 'dropuot' \(did you mean 'dropout'\?\)"):
        _build("torchvision:efficientnet_b0", 32, args={"dropuot": 0.1})
    assert main(["train", _config(tmp_path, photos, "torchvision:vit_b_16", args={"image_size": 224})]) == 2
    assert "cannot take 1x32x32 inputs" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "lib").exists() or not any((tmp_path / "runs" / "lib").iterdir())


def test_kiln_models_lists_names_sizes_and_weights_without_building(capsys):
    assert main(["models", "convnext"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("torchvision:convnext_tiny "))
    assert "28.6M" in line and " 224 " in line and "IMAGENET1K_V1" in line and " no " in line
    assert "timm:convnext_tiny" in out
    assert main(["models", "no_such_model_anywhere"]) == 2


def test_the_torch_free_name_reader_agrees_with_torchvision():
    import torchvision

    from kiln.core.model_names import torchvision_names

    models = torchvision.models  # its classifiers, its semantic segmentation models and its detectors
    assert list(torchvision_names()) == sorted(models.list_models(module=models) +
                                               models.list_models(module=models.segmentation) +
                                               models.list_models(module=models.detection))


def test_the_weights_bring_their_preprocessing_and_a_misfit_is_refused(tmp_path, photos):
    from kiln.models.preprocessing import with_weights_preprocessing

    def resolved(name, pretrained, size=32):
        return with_weights_preprocessing(load_config(_config(tmp_path, photos, name, size,
                                                              pretrained=pretrained))).data

    data = resolved("torchvision:efficientnet_b3", "torchvision", size=None)  # unset: the weights' own
    assert (data.image_size, data.crop_fraction, data.mean) == (300, round(300 / 320, 4), [0.485, 0.456, 0.406])
    assert resolved("torchvision:efficientnet_b3", "torchvision").image_size == 32  # given: it wins
    assert resolved("timm:convnext_tiny", "timm").crop_fraction == 0.95  # timm's pretrained_cfg
    assert resolved("torchvision:resnet18", None).mean is None  # no weights, nothing borrowed

    # a ViT built for 32 px cannot take position embeddings trained at 224 px
    import torchvision
    from safetensors.torch import save_file

    path = tmp_path / "vit.safetensors"
    save_file(torchvision.models.vit_b_16(weights=None).state_dict(), str(path))
    with pytest.raises(KilnError, match=r"encoder.pos_embedding .* do not fit torchvision:vit_b_16.*input size"):
        load_pretrained(_build("torchvision:vit_b_16", 32, channels=3),
                        build_config({"model": {"name": "torchvision:vit_b_16", "pretrained": str(path)}}).model)


def test_comparing_models_ranks_them_with_their_size_and_speed(tmp_path, photos):
    """configs/tune/compare_models.yaml in small: a grid over model.name; the tune results and the report
    compare test accuracy, parameters, seconds per epoch and images per second."""
    from kiln.commands.tune.runner import run_tune

    base = yaml.safe_load(open(_config(tmp_path, photos, "cnn")))
    base["model"] = {"name": "cnn", "args": {"channels": [4]}}
    base["trainer"] = {"epochs": 1, "limit_train_batches": 2}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"base": "base.yaml", "metric": "val/acc", "mode": "max", "trials": 2, "sampler": "grid", "test_trials": True,
            "pruner": "none", "space": {"model.name": ["torchvision:squeezenet1_1", "torchvision:mnasnet0_5"]}}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(spec))
    tune_dir = run_tune(tmp_path / "tune.yaml", [])
    import csv

    rows = list(csv.DictReader(open(tune_dir / "results.csv")))
    assert {r["param:model.name"] for r in rows} == set(spec["space"]["model.name"])
    assert all(float(r["s_per_epoch"]) > 0 and float(r["samples_per_s"]) > 0 and r["test/acc"] for r in rows)
    assert len({r["parameters"] for r in rows}) == 2  # the models' own sizes

    assert main(["report", *[r["run_dir"] for r in rows], "--out", str(tmp_path / "compare.html")]) == 0
    text = (tmp_path / "compare.html").read_text()
    assert "parameters" in text and "torchvision:squeezenet1_1" in text and "samples / s" in text


def test_a_hugging_face_folder_is_read_safetensors_first(tmp_path):
    """timm's and transformers' save_pretrained layout: config.json beside model.safetensors (preferred) or
    pytorch_model.bin."""
    import json as js

    from safetensors.torch import save_file

    source = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(js.dumps({"architecture": "resnet10t", "num_classes": 1000}))
    torch.save({k: torch.zeros_like(v) for k, v in source.state_dict().items()}, folder / "pytorch_model.bin")
    save_file(source.state_dict(), str(folder / "model.safetensors"))
    model = _build("timm:resnet10t", 32, channels=3)
    report = load_pretrained(model, build_config({"model": {"name": "timm:resnet10t", "pretrained": str(folder)}}).model)
    assert report.source.endswith("model.safetensors") and sorted(n.split(" ")[0] for n in report.new) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)  # the safetensors, not the zeros
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(KilnError, match=r"a Hugging Face folder .* without weights; looked for model.safetensors"):
        load_pretrained(model, build_config({"model": {"name": "timm:resnet10t", "pretrained": str(folder)}}).model)
