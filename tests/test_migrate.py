"""kiln new --from: a pytorch-template project (written here in that template's real layout) brought over and
trained, with its optimizer, LR curve, monitor and early stopping; bad projects explained."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import templatemodel
import yaml
from test_torch_optim import logged_lrs, step_lr_curve

from fakedata import write_idx_dataset
from kiln.cli import main
from kiln.config import load_config
from kiln.train import session

CONFIG = {
    "name": "Mnist_LeNet", "n_gpu": 1,
    "arch": {"type": "MnistModel", "args": {}},
    "data_loader": {"type": "MnistDataLoader", "args": {"data_dir": "data/", "batch_size": 64, "shuffle": True,
                                                        "validation_split": 0.1, "num_workers": 0}},
    "optimizer": {"type": "Adam", "args": {"lr": 0.01, "weight_decay": 0, "amsgrad": True}},
    "loss": "nll_loss", "metrics": ["accuracy", "top_k_acc"],
    "lr_scheduler": {"type": "StepLR", "args": {"step_size": 1, "gamma": 0.5}},
    "trainer": {"epochs": 3, "save_dir": "saved/", "save_period": 1, "verbosity": 2, "monitor": "min val_loss",
                "early_stop": 10, "tensorboard": False},
}

FILES = {
    "base/__init__.py": "from .base_data_loader import *\nfrom .base_model import *\n",
    "base/base_model.py": '''import torch.nn as nn
import numpy as np
from abc import abstractmethod


class BaseModel(nn.Module):
    """Base class for all models"""
    @abstractmethod
    def forward(self, *inputs):
        raise NotImplementedError

    def __str__(self):
        model_parameters = filter(lambda p: p.requires_grad, self.parameters())
        params = sum([np.prod(p.size()) for p in model_parameters])
        return super().__str__() + '\\nTrainable parameters: {}'.format(params)
''',
    "base/base_data_loader.py": '''from torch.utils.data import DataLoader


class BaseDataLoader(DataLoader):
    def __init__(self, dataset, batch_size, shuffle, validation_split, num_workers):
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
''',
    "model/__init__.py": "",
    # pytorch-template's MnistModel as that template ships it: tests/templatemodel.py's copy, on BaseModel
    "model/model.py": "import torch.nn as nn\nimport torch.nn.functional as F\nfrom base import BaseModel\n\n\n"
                      + inspect.getsource(templatemodel.MnistModel).replace("(nn.Module)", "(BaseModel)"),
    "model/loss.py": '''import torch.nn.functional as F


def nll_loss(output, target):
    return F.nll_loss(output, target)


def smooth_nll(output, target):
    return 0.9 * F.nll_loss(output, target) - 0.1 * output.mean()
''',
    "model/metric.py": "def accuracy(output, target):\n    return (output.argmax(1) == target).float().mean().item()\n",
    "data_loader/data_loaders.py": '''from torchvision import datasets, transforms
from base import BaseDataLoader


class MnistDataLoader(BaseDataLoader):
    """MNIST data loading demo using BaseDataLoader"""
    def __init__(self, data_dir, batch_size, shuffle=True, validation_split=0.0, num_workers=1, training=True):
        trsfm = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        self.data_dir = data_dir
        self.dataset = datasets.MNIST(self.data_dir, train=training, download=True, transform=trsfm)
        super().__init__(self.dataset, batch_size, shuffle, validation_split, num_workers)
''',
}


def write_template_project(root: Path, **changes) -> Path:
    cfg = {**CONFIG, **changes}
    (root / "config.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg, indent=4))
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    write_idx_dataset(root / "data" / "MNIST" / "raw", n_train=600, n_test=200)  # where torchvision puts MNIST
    return root


def test_a_pytorch_template_project_is_brought_over_and_trains_with_its_lr_curve(tmp_path, capsys):
    project = write_template_project(tmp_path / "template")
    dest = tmp_path / "kiln_project"
    assert main(["new", str(dest), "--from", str(project)]) == 0
    printed = capsys.readouterr().out
    assert "save_period" in printed and "metrics" in printed  # the unmapped keys are listed
    cfg_file = dest / "configs" / "train.yaml"
    raw = yaml.safe_load(cfg_file.read_text())
    assert raw["model"]["name"] == "model.model:MnistModel" and raw["data"]["name"] == "mnist"
    assert raw["optim"] == {"name": "torch.optim:Adam", "decay_norm_and_bias": True, "lr": 0.01, "weight_decay": 0,
                            "args": {"amsgrad": True}}
    assert raw["trainer"]["checkpoint"] == {"monitor": "val/loss", "mode": "min"}
    assert raw["trainer"]["early_stopping"]["patience"] == 10 and raw["data"]["val_split"] == 0.1

    cfg = load_config(cfg_file, ["log.progress=none"])
    result = session.train(cfg, quiet=True)
    assert logged_lrs(result.run_dir) == pytest.approx(step_lr_curve(3, 0.01, step_size=1, gamma=0.5))
    assert result.test_metrics["acc"] > 0.5  # log_softmax + nll_loss learns under kiln's cross-entropy
    assert result.run_dir.is_relative_to(project / "saved")


def test_a_loss_of_the_project_becomes_task_loss(tmp_path):
    project = write_template_project(tmp_path / "template", loss="smooth_nll")
    dest = tmp_path / "k"
    assert main(["new", str(dest), "--from", str(project)]) == 0
    cfg = load_config(dest / "configs" / "train.yaml", ["trainer.epochs=1", "log.progress=none"])
    assert cfg.task.loss == "model.loss:smooth_nll"
    result = session.train(cfg, quiet=True)
    assert "train/objective" in (result.run_dir / "metrics.jsonl").read_text()


@pytest.mark.parametrize("change, message", [
    ({"arch": {"type": "LeNet", "args": {}}}, "arch.type 'LeNet' is not a class in .*model.py .classes there: MnistModel"),
    ({"optimizer": None}, "it has no optimizer"),
    (None, "no config.json in"),
])
def test_bad_template_projects_are_explained(tmp_path, capsys, change, message):
    import re

    project = tmp_path / "template"
    if change is not None:
        write_template_project(project, **change)
        if change.get("optimizer", 1) is None:
            raw = json.loads((project / "config.json").read_text())
            raw.pop("optimizer")
            (project / "config.json").write_text(json.dumps(raw))
    else:
        project.mkdir()
    assert main(["new", str(tmp_path / "dest"), "--from", str(project)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "dest" / "configs").exists()
