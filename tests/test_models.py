import sys

import pytest
import torch

from kiln.config import ModelConfig
from kiln.core.errors import KilnError
from kiln.data import DataInfo
from kiln.models import build_model

INFO = DataInfo("fashion_mnist", "image", 10, [str(i) for i in range(10)], in_channels=1, image_size=(28, 28))


@pytest.mark.parametrize("name, args", [("mlp", {}), ("cnn", {}), ("cnn", {"channels": [4, 8], "convs_per_stage": 2,
                                                                           "batch_norm": False, "hidden": 16}),
                                        ("resnet18", {}), ("resnet18", {"small_input": False})])
def test_models_fit_the_data(name, args):
    model = build_model(ModelConfig(name=name, args=args), INFO).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_small_input_stem():
    model = build_model(ModelConfig(name="resnet18"), INFO)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, torch.nn.Identity) and model.fc.out_features == 10


def test_unknown_model_lists_known_ones():
    with pytest.raises(KilnError, match=r"unknown model .vgg. — kiln's models: cnn, embedding_bag, fcos_small, gru, mlp, "
                                        "resnet18.*any torchvision classifier as torchvision:NAME"):
        build_model(ModelConfig(name="vgg"), INFO)


def test_bad_model_args_name_the_accepted_ones():
    with pytest.raises(KilnError, match=r"does not take 'width'.*it accepts: channels, convs_per_stage"):
        build_model(ModelConfig(name="cnn", args={"width": 3}), INFO)


def test_user_model_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, num_classes, hidden=8):\n"
        "        super().__init__()\n"
        "        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, hidden),"
        " torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))\n"
        "    def forward(self, x):\n"
        "        return self.net(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model(ModelConfig(name="my_models:Net", args={"hidden": 5}), INFO)
    assert model.net[1].out_features == 5 and model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(KilnError, match="has no attribute 'Nope'"):
        build_model(ModelConfig(name="my_models:Nope"), INFO)
    with pytest.raises(KilnError, match="cannot import module 'not_a_module_xyz'"):
        build_model(ModelConfig(name="not_a_module_xyz:Net"), INFO)
    sys.modules.pop("my_models", None)
