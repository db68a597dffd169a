"""A config's settings for one kind of device (`on_device:`): the default recipe picks its batch and epochs for
the machine, the command line and a derived file still win, and the run records what ran."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT
from kiln.config import load_config, profile_summary, resolved_values, to_yaml
from kiln.core.errors import KilnError

DEFAULT = ROOT / "configs" / "fashion_mnist.yaml"


def _file(tmp_path, name: str, body: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_the_default_takes_its_cpu_recipe_on_a_cpu_and_its_gpu_recipe_on_a_gpu():
    cpu = load_config(DEFAULT, ["trainer.device=cpu"])
    assert (cpu.data.batch_size, cpu.trainer.epochs) == (256, 12)
    assert cpu.optim.resolved_lr(256) == pytest.approx(0.1)
    gpu = load_config(DEFAULT, ["trainer.device=cuda"])  # no profile for cuda: the file's own recipe
    assert (gpu.data.batch_size, gpu.trainer.epochs) == (1024, 15) and profile_summary(gpu) == ""
    # the run's config.yaml holds what ran and says where it came from; loaded again it is the same recipe
    text = to_yaml(cpu, resolved_values(cpu))
    assert "#   on_device.cpu: data.batch_size=256, trainer.epochs=12 (the config's on_device.cpu" in text
    assert "on_device:" not in text
    saved = load_config(None, base=yaml.safe_load(text), overrides=["trainer.device=cuda"])
    assert (saved.data.batch_size, saved.trainer.epochs) == (256, 12)


def test_the_command_line_and_a_derived_file_win_over_the_profile(tmp_path):
    asked = load_config(DEFAULT, ["trainer.device=cpu", "data.batch_size=64"])
    assert (asked.data.batch_size, asked.trainer.epochs) == (64, 12)
    assert profile_summary(asked).startswith("trainer.epochs=12 (")  # only what the profile decided
    derived = _file(tmp_path, "mine.yaml", {"base": str(DEFAULT), "data": {"batch_size": 512}})
    mine = load_config(derived, ["trainer.device=cpu"])
    assert (mine.data.batch_size, mine.trainer.epochs) == (512, 12)
    # a derived file's own profile applies over everything below it
    own = _file(tmp_path, "own.yaml", {"base": str(DEFAULT), "on_device": {"cpu": {"trainer.epochs": 3}}})
    assert load_config(own, ["trainer.device=cpu"]).trainer.epochs == 3


@pytest.mark.parametrize("profile, message", [
    ({"gpu": {"data": {"batch_size": 8}}}, "on_device.gpu: not a device type; use cpu, cuda, mps, xpu"),
    ({"cuda": {"data": {"batchsize": 8}}}, "on_device.cuda: invalid config:\n  unknown key 'data.batchsize' — did "
                                           "you mean 'data.batch_size'"),
    ({"cpu": {"trainer": {"device": "cuda"}}}, "on_device.cpu cannot set trainer.device"),
    ({"cpu": 256}, "on_device.cpu must be a mapping of settings"),
    ([256], "on_device must map a device type"),
])
def test_a_wrong_profile_is_named_on_any_machine(tmp_path, profile, message):
    path = _file(tmp_path, "bad.yaml", {"data": {"name": "fashion_mnist"}, "on_device": profile})
    with pytest.raises(KilnError) as e:
        load_config(path, ["trainer.device=cpu"])  # the cuda profile is checked on a CPU too
    assert message in str(e.value)
