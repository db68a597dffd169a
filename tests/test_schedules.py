"""Every LR schedule works for every number of steps (small datasets, fast_dev_run, limits), and follows its curve."""

import itertools
import math

import pytest
import torch

from kiln.config import ScheduleConfig
from kiln.train.optim import Schedule


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def _run(name: str, epochs: int, steps_per_epoch: int, **cfg) -> list[float]:
    optimizer = _optimizer()
    schedule = Schedule(ScheduleConfig(name=name, **cfg), optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_step()
        schedule.after_epoch({"val/loss": 1.0})
    return lrs


@pytest.mark.parametrize("name, extra", [("onecycle", {}), ("onecycle", {"pct_start": 0.5}), ("cosine", {}),
                                         ("cosine", {"warmup_epochs": 1.0}), ("step", {"step_size": 1}),
                                         ("linear", {"warmup_epochs": 0.5}), ("none", {}),
                                         ("reduce_on_plateau", {})])
def test_every_schedule_runs_for_1_to_50_steps(name, extra):
    for total in range(1, 51):
        lrs = _run(name, 1, total, **extra)  # used to raise ZeroDivisionError for onecycle at 4 (and 2) steps
        assert len(lrs) == total and all(math.isfinite(lr) and 0 <= lr <= 0.1 + 1e-12 for lr in lrs), (total, lrs)


def test_onecycle_warms_up_to_the_peak_then_anneals():
    lrs = _run("onecycle", 2, 10, pct_start=0.25)
    peak = lrs.index(max(lrs))
    assert 3 <= peak <= 5 and max(lrs) == pytest.approx(0.1)
    assert all(a < b for a, b in itertools.pairwise(lrs[:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:])) and lrs[-1] < 1e-3


def test_cosine_with_warmup_and_step_schedules_follow_their_curves():
    cosine = _run("cosine", 4, 5, warmup_epochs=1.0)
    assert cosine[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert all(a >= b for a, b in itertools.pairwise(cosine[5:])) and cosine[-1] < 0.01
    step = _run("step", 4, 3, step_size=2, gamma=0.5)
    assert step == pytest.approx([0.1] * 6 + [0.05] * 6)


def test_linear_warms_up_then_decays_in_equal_steps_to_min_lr():
    lrs = _run("linear", 3, 4, warmup_epochs=0.5, min_lr_ratio=0.1)  # transformers' fine-tuning schedule
    assert lrs[:2] == pytest.approx([0.05, 0.1])
    decay = lrs[2:]
    steps = [a - b for a, b in itertools.pairwise(decay)]
    assert steps == pytest.approx([0.009] * len(steps)) and decay[-1] == pytest.approx(0.019)


def test_reduce_on_plateau_cuts_the_lr_after_patience_epochs_without_improvement():
    optimizer = _optimizer()
    schedule = Schedule(ScheduleConfig(name="reduce_on_plateau", patience=1, factor=0.5), optimizer, epochs=5,
                        steps_per_epoch=2)
    lrs = []
    for loss in (1.0, 0.9, 0.95, 0.95, 0.95):
        schedule.after_epoch({"val/loss": loss})
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])


def test_onecycle_resumed_with_more_epochs_keeps_going_without_error():
    optimizer = _optimizer()
    first = Schedule(ScheduleConfig(name="onecycle"), optimizer, epochs=2, steps_per_epoch=4)
    for _ in range(8):
        optimizer.step()
        first.after_step()
    longer = Schedule(ScheduleConfig(name="onecycle"), _optimizer(), epochs=4, steps_per_epoch=4)
    longer.load_state_dict(first.state_dict())
    for _ in range(8):  # the 8 more steps of the two added epochs
        longer.after_step()
    assert math.isfinite(longer.impl.optimizer.param_groups[0]["lr"])


def test_max_steps_sets_the_epochs_for_the_dataset_size(tmp_path, idx_root):
    from conftest import tiny_config
    from kiln.config import build_config
    from kiln.train import session

    # 384 training images in batches of 32: 12 steps per epoch, so 30 steps take 3 epochs (rounded up)
    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"max_steps": 30, "epochs": 50,
                                                                "test_after_fit": False}))
    result = session.train(cfg, quiet=True)
    assert result.config.trainer.epochs == 3 and "epochs: 3" in (result.run_dir / "config.yaml").read_text()
    assert len((result.run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_min_steps_raises_the_epochs_of_a_small_dataset_only(tmp_path, idx_root):
    from conftest import tiny_config
    from kiln.config import build_config
    from kiln.train.session import epochs_from_steps

    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"min_steps": 100, "epochs": 4}))
    cfg = epochs_from_steps(cfg, 12)  # 12 steps per epoch: 100 steps need 9 epochs
    assert cfg.trainer.epochs == 9
    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"min_steps": 100, "epochs": 4}))
    cfg = epochs_from_steps(cfg, 500)  # a large dataset keeps its 4 epochs
    assert cfg.trainer.epochs == 4


def test_fast_dev_run_says_it_runs_one_epoch_not_a_step_conversion(tmp_path, idx_root, caplog):
    from conftest import tiny_config
    from kiln.config import build_config
    from kiln.train.session import epochs_from_steps

    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"min_steps": 1500, "epochs": 30, "fast_dev_run": True}))
    with caplog.at_level("INFO", logger="kiln"):
        assert epochs_from_steps(cfg, 21) == cfg
    assert "fast_dev_run: 1 epoch" in caplog.text and "->" not in caplog.text
