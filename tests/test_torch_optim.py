"""Any torch.optim optimizer and torch.optim.lr_scheduler schedule from the config, as pytorch-template names them."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from kiln.config import build_config
from kiln.core.errors import KilnError
from kiln.train import session
from kiln.train.optim import Schedule, build_optimizer


def logged_lrs(run) -> list[float]:
    """The learning rate kiln logged for each epoch of a run."""
    return [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def step_lr_curve(epochs: int, lr: float, step_size: int, gamma: float) -> list[float]:
    """Adam + StepLR run directly, as a pytorch-template trainer steps them: the learning rate of each epoch."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr, amsgrad=True)
    direct = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    curve = []
    for _ in range(epochs):
        curve.append(opt.param_groups[0]["lr"])
        opt.step()
        direct.step()
    return curve


def test_a_torch_scheduler_per_epoch_gives_the_lr_curve_it_gives_when_run_directly(tmp_path, idx_root):
    raw = tiny_config(tmp_path, idx_root, optim={"name": "torch.optim:Adam", "lr": 0.01, "weight_decay": 1e-4,
                                                 "args": {"amsgrad": True}},
                      schedule={"name": "StepLR", "args": {"step_size": 2, "gamma": 0.5}},
                      trainer={"epochs": 5, "test_after_fit": False})
    raw["schedule"].pop("warmup_epochs", None)
    result = session.train(build_config(raw), quiet=True)

    expected = step_lr_curve(5, 0.01, step_size=2, gamma=0.5)
    assert logged_lrs(result.run_dir) == pytest.approx(expected) and expected[-1] == pytest.approx(0.0025)
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert all(g["amsgrad"] for g in saved["optimizer"]["param_groups"])


def test_one_cycle_from_torch_steps_per_batch_and_interval_overrides():
    model = torch.nn.Linear(2, 2)
    cfg = build_config({"optim": {"name": "SGD", "lr": 0.1},
                        "schedule": {"name": "OneCycleLR", "args": {"max_lr": 0.1, "total_steps": 10}}})
    opt = build_optimizer(cfg.optim, model, torch.device("cpu"))
    sched = Schedule(cfg.schedule, opt, epochs=1, steps_per_epoch=10)
    assert sched.per_step
    schedule = build_config({"schedule": {"name": "ExponentialLR", "args": {"gamma": 0.5}, "interval": "step"}}).schedule
    sched = Schedule(schedule, opt, epochs=1, steps_per_epoch=10)
    before = opt.param_groups[0]["lr"]
    opt.step()
    sched.after_step()
    assert opt.param_groups[0]["lr"] == pytest.approx(before * 0.5)


@pytest.mark.parametrize("section, message", [
    ({"optim": {"name": "Adam", "args": {"amsgrab": True}}}, r"Adam takes no argument 'amsgrab'; its signature"),
    ({"schedule": {"name": "StepLR", "args": {"gama": 0.1}}}, r"StepLR takes no argument 'gama'"),
    ({"schedule": {"name": "os:getcwd"}}, "kiln only accepts"),
])
def test_unknown_optimizers_schedules_and_arguments_are_named(section, message):
    cfg = build_config(section)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(KilnError, match=message):
        opt = build_optimizer(cfg.optim, model, torch.device("cpu"))
        Schedule(cfg.schedule, opt, epochs=1, steps_per_epoch=1)


def test_an_unknown_optimizer_name_is_refused_with_the_config():
    with pytest.raises(KilnError, match=r"'optim.name': 'Adamm' is neither one of kiln's .* nor a torch.optim class — "
                                        r"did you mean Adam\?"):
        build_config({"optim": {"name": "Adamm"}})
