"""Transfer learning: pretrained weights, channel adaptation, load reports, freezing, unfreezing, inspect."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import ROOT, only_run, tiny_config, write_config
from kiln.commands.layers import layer_table, selected
from kiln.config import DataConfig, ModelConfig, OptimConfig, build_config
from kiln.core.errors import KilnError, TrainingInterrupted
from kiln.core.state import load_checkpoint
from kiln.data import DataInfo, DataRequest, build_data
from kiln.models import build_model
from kiln.models.pretrained import adapt_in_channels, load_pretrained
from kiln.train import session
from kiln.train.callbacks import LambdaCallback
from kiln.train.optim import build_optimizer

GRAY = DataInfo("fashion_mnist", "image", 10, [str(i) for i in range(10)], in_channels=1, image_size=(28, 28))
RGB = DataInfo("rgb", "image", 1000, [str(i) for i in range(1000)], in_channels=3, image_size=(224, 224))


def resnet(info, **args):
    return build_model(ModelConfig(name="resnet18", args=args), info)


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> Path:
    """A 3-channel, 1000-class ResNet-18 state_dict file, standing in for ImageNet weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18_rgb.pth"
    torch.save(resnet(RGB, small_input=False).state_dict(), path)
    return path


def test_gray_kernel_is_the_sum_of_the_rgb_kernels():
    w = torch.randn(8, 3, 3, 3)
    gray = torch.rand(2, 1, 9, 9)
    assert torch.allclose(F.conv2d(gray, adapt_in_channels(w, 1)), F.conv2d(gray.repeat(1, 3, 1, 1), w), atol=1e-5)
    w1 = torch.randn(8, 1, 3, 3)
    rgb_of_gray = gray.repeat(1, 3, 1, 1)
    assert torch.allclose(F.conv2d(rgb_of_gray, adapt_in_channels(w1, 3)), F.conv2d(gray, w1), atol=1e-5)


def test_adapted_resnet_answers_a_gray_image_like_its_rgb_replica(imagenet_like):
    rgb_model = resnet(RGB, small_input=False).eval()
    rgb_model.load_state_dict(torch.load(imagenet_like))
    gray_model = resnet(DataInfo("g", "image", 1000, RGB.class_names, in_channels=1, image_size=(64, 64)),
                        small_input=False).eval()
    report = load_pretrained(gray_model, ModelConfig(name="resnet18", pretrained=str(imagenet_like), weights="DEFAULT"))
    assert report.adapted == ["conv1.weight: (64, 3, 7, 7) -> (64, 1, 7, 7)"] and not report.new
    gray = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(gray_model(gray), rgb_model(gray.repeat(1, 3, 1, 1)), atol=1e-4)


def test_load_report_names_every_tensor(imagenet_like):
    model = resnet(GRAY, small_input=True)
    report = load_pretrained(model, ModelConfig(name="resnet18", pretrained=str(imagenet_like), weights="DEFAULT"))
    assert report.new == ["conv1.weight (source (64, 3, 7, 7), model (64, 1, 3, 3))",
                          "fc.weight (source (1000, 512), model (10, 512))", "fc.bias (source (1000,), model (10,))"]
    assert not report.adapted and not report.ignored
    assert len(report.loaded) == len(model.state_dict()) - 3 and "layer4.1.bn2.running_var" in report.loaded
    assert "newly initialised: conv1.weight" in report.summary()


def test_torchvision_weights_through_torchvisions_own_api_and_cache(tmp_path, monkeypatch, imagenet_like):
    import shutil

    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    shutil.copy(imagenet_like, cached)
    model = resnet(GRAY, small_input=False)
    report = load_pretrained(model, ModelConfig(name="resnet18", pretrained="torchvision", weights="IMAGENET1K_V1"))
    assert report.source == "torchvision resnet18 IMAGENET1K_V1" and len(report.adapted) == 1
    with pytest.raises(KilnError, match="'IMAGENET9K' is not a weights of resnet18; choose from: IMAGENET1K_V1"):
        load_pretrained(model, ModelConfig(name="resnet18", pretrained="torchvision", weights="IMAGENET9K"))


def test_foreign_weights_are_refused(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(KilnError, match=r"no tensor of .*other.pt fits this model"):
        load_pretrained(resnet(GRAY), ModelConfig(name="resnet18", pretrained=str(tmp_path / "other.pt"), weights="DEFAULT"))
    with pytest.raises(KilnError, match="no such file or folder"):
        load_pretrained(resnet(GRAY), ModelConfig(name="resnet18", pretrained=str(tmp_path / "missing.pt"), weights="DEFAULT"))


def test_backbone_learns_slower_with_discriminative_lr():
    from kiln.models.freeze import head_prefix

    model = build_model(ModelConfig(name="cnn", args={"channels": [4, 8]}), GRAY)
    head = head_prefix(model)
    assert head == "10"  # 2 stages x (conv, bn, relu, pool), flatten, dropout, then the Linear head
    opt = build_optimizer(OptimConfig(lr=0.1, backbone_lr_mult=0.1, weight_decay=0.01), model, torch.device("cpu"),
                          head=head)
    by_lr = {}
    for g in opt.param_groups:
        by_lr[round(g["lr"], 6)] = by_lr.get(round(g["lr"], 6), 0) + sum(p.numel() for p in g["params"])
    assert by_lr == {0.1: sum(p.numel() for p in model[10].parameters()),
                     0.01: sum(p.numel() for p in model[:10].parameters())}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.01}


def _fine_tune_cfg(tmp_path, idx_root, weights, folder="runs", **model):
    return build_config(tiny_config(
        tmp_path, idx_root, model={"name": "cnn", "args": {"channels": [8, 16], "dropout": 0.0},
                                   "pretrained": str(weights), "freeze": "backbone", **model},
        trainer={"epochs": 3, "log_every_n_steps": 4},
        log={"dir": str(tmp_path / folder), "progress": "none", "tensorboard": False}))


@pytest.fixture
def cnn_weights(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "cnn.pt"
    torch.save(build_model(ModelConfig(name="cnn", args={"channels": [8, 16], "dropout": 0.0}), GRAY).state_dict(),
               path)
    return path


def test_frozen_backbone_and_its_batchnorm_do_not_move(tmp_path, idx_root, cnn_weights):
    result = session.train(_fine_tune_cfg(tmp_path, idx_root, cnn_weights), quiet=True)
    start = torch.load(cnn_weights)
    end = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["model"]
    for name in start:
        if name.startswith("10."):  # the head: after 2 x (conv, bn, relu, pool), flatten and dropout
            assert not torch.equal(start[name], end[name]), name
        else:  # convs, BN affine weights and BN running statistics
            assert torch.equal(start[name], end[name]), name


def test_unfreezing_changes_the_trainable_set_and_resumes_exactly(tmp_path, idx_root, cnn_weights):
    trainable = {}

    def record(t):
        trainable[t.state.epoch] = sum(p.numel() for p in t.model.parameters() if p.requires_grad)

    full = session.train(_fine_tune_cfg(tmp_path, idx_root, cnn_weights, "full", unfreeze_at_epoch=2), quiet=True,
                         callbacks=[LambdaCallback(on_step_end=record)])
    assert trainable[0] == 16 * 7 * 7 * 10 + 10 < trainable[1] == trainable[2]  # only the head, then all

    def stop(t):
        if t.state.step == 14:  # in epoch 2, after the unfreeze
            t.stop_requested = True

    cfg = _fine_tune_cfg(tmp_path, idx_root, cnn_weights, "cut", unfreeze_at_epoch=2)
    with pytest.raises(TrainingInterrupted):
        session.train(cfg, quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    resumed = session.train(cfg, resume=only_run(tmp_path / "cut"), quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tune_from_a_run_on_other_classes(tmp_path, idx_root, cli):
    first = write_config(tmp_path, tiny_config(tmp_path, idx_root, name="first", data={"classes": [0, 1, 2, 3, 4]},
                                               trainer={"epochs": 2}), "first.yaml")
    assert cli("train", first).returncode == 0
    second = tiny_config(tmp_path, idx_root, name="second", data={"classes": [5, 6, 7, 8, 9], "train_subset": 100},
                         model={"name": "cnn", "args": {"channels": [8, 16], "dropout": 0.1},
                                "pretrained": str(tmp_path / "runs" / "first"), "freeze": "backbone",
                                "unfreeze_at_epoch": 2},
                         trainer={"epochs": 2})
    result = cli("train", write_config(tmp_path, second, "second.yaml"))
    assert result.returncode == 0, result.stderr
    assert "14 tensors loaded, 0 adapted, 0 newly initialised" in result.stderr  # the 5-class head fits too
    assert "(unfrozen)" in result.stderr
    run = next((tmp_path / "runs" / "second").iterdir())
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["class_names"] == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_data_classes_are_selected_and_relabelled(idx_root):
    data = build_data(DataConfig(root=idx_root, classes=[7, 2], val_split=0), DataRequest(seed=0, device=torch.device("cpu")))
    assert data.info.num_classes == 2 and data.info.class_names == ["Sneaker", "Pullover"]
    labels = torch.cat([y for _, y in data.test.epoch(0)])
    assert set(labels.tolist()) == {0, 1}
    with pytest.raises(KilnError, match=r"data.classes=\[3, 12\] must list distinct class numbers in 0..9"):
        build_data(DataConfig(root=idx_root, classes=[3, 12]), DataRequest(seed=0, device=torch.device("cpu")))


def test_inspect_shapes_match_a_direct_forward_and_hooks_are_removed():
    model = build_model(ModelConfig(name="resnet18"), GRAY)
    x = torch.randn(2, 1, 28, 28)
    rows, _outputs = layer_table(model, x)
    by_name = {r.name: r for r in rows}
    assert by_name["fc"].output_shape == (2, 10) and by_name["conv1"].output_shape == (2, 64, 28, 28)
    with torch.no_grad():
        model.eval()
        h = model.layer1(model.relu(model.bn1(model.conv1(x))))
    assert by_name["layer1.1.bn2"].output_shape == tuple(h.shape)
    assert all(not m._forward_hooks for m in model.modules())
    rows, _ = layer_table(model, x, "layer[12]")
    assert [r.name for r in rows] == ["layer1", "layer2"] and rows[1].output_shape == (2, 128, 14, 14)

    def broken(*_):
        raise RuntimeError("boom")

    model.fc.register_forward_pre_hook(broken)
    with pytest.raises(RuntimeError):
        layer_table(model, x)
    assert all(not m._forward_hooks for m in model.modules())  # removed even when the forward fails
    assert len(selected(model, None)) == len([m for m in model.modules() if not list(m.children())])


def test_inspect_cli_saves_feature_maps(tmp_path, config_file, cli):
    assert cli("train", config_file, "trainer.epochs=1").returncode == 0
    run = only_run(tmp_path / "runs")
    result = cli("inspect", run, "--layers", "0", "--sample", "2", "--save")
    assert result.returncode == 0, result.stderr
    assert "Conv2d" in result.stdout and "(2, 8, 28, 28)" in result.stdout
    from PIL import Image

    with Image.open(run / "inspect" / "0.png") as img:
        assert img.size[0] > 300 and img.size[1] > 300
    assert torch.load(run / "inspect" / "0.pt").shape == (2, 8, 28, 28)
    result = cli("inspect", tmp_path / "config.yaml")
    assert result.returncode == 0 and "freshly initialised" in result.stdout


def test_lr_find_on_pretrained_weights_sees_the_images_as_training_does(tmp_path, monkeypatch, imagenet_like, cli,
                                                                         own_cache):
    import shutil

    from torchvision.models import ResNet18_Weights

    from fakedata import write_image_folder
    from kiln.train import lr_find

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    shutil.copy(imagenet_like, cached)
    photos = write_image_folder(tmp_path / "photos", n=24, extras=False)
    seen, real_sweep = [], lr_find.sweep

    def sweep(model, optimizer, batches, **kwargs):
        inputs, _ = next(iter(batches.epoch(0)))
        seen.append(tuple(inputs.shape[-2:]))
        return real_sweep(model, optimizer, batches, **kwargs)

    monkeypatch.setattr(lr_find, "sweep", sweep)
    raw = yaml.safe_load((ROOT / "configs" / "transfer_resnet18_folder.yaml").read_text())
    del raw["data"]["image_size"]  # left to the weights, as their crop_fraction, mean and std are
    result = cli("lr-find", write_config(tmp_path, raw), f"data.root={photos}", "data.batch_size=4",
                 "data.num_workers=0", f"log.dir={tmp_path / 'runs'}", "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert seen == [(224, 224)]  # the weights' 224 px, as kiln train feeds them — not the folder's median size
    assert "preprocessing of the torchvision resnet18 IMAGENET1K_V1 weights" in result.stderr
