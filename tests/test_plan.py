"""kiln.train.plan.RunPlan: what a run resolves for this machine and process group."""

import torch

from kiln.config import build_config
from kiln.core.dist import ProcessInfo
from kiln.train.plan import RunPlan


def test_the_plan_says_what_this_machine_made_of_the_settings_left_to_kiln():
    cpu = torch.device("cpu")
    plan = RunPlan.of(build_config({}), cpu, ProcessInfo())
    assert plan.resolved() == {"trainer.device": "cpu on this machine", "trainer.precision": "32 on cpu"}
    two = RunPlan.of(build_config({"trainer": {"strategy": "fsdp", "precision": "bf16"}}), cpu,
                     ProcessInfo(world_size=2, local_world_size=2))
    assert two.resolved() == {"trainer.device": "cpu on this machine", "trainer.strategy": "fsdp over 2 processes"}
    assert two.strategy.name == "fsdp" and RunPlan.of(build_config({}), cpu, ProcessInfo()).strategy.name == "single"


def test_the_plan_resolves_the_monitors_the_config_leaves_to_the_task_and_records_them():
    cpu = torch.device("cpu")
    given = build_config({"task": {"name": "multilabel"}, "trainer": {"early_stopping": {"monitor": "val/map"}}})
    assert given.trainer.checkpoint.monitor is None and given.trainer.checkpoint.mode is None  # as written
    plan = RunPlan.of(given, cpu, ProcessInfo())
    checkpoint, stopping = plan.config.trainer.checkpoint, plan.config.trainer.early_stopping
    assert (checkpoint.monitor, checkpoint.mode, stopping.mode) == ("val/f1_micro", "max", "max")
    assert set(plan.derived()) == {"trainer.checkpoint.monitor", "trainer.checkpoint.mode",
                                   "trainer.early_stopping.mode"}
    regression = RunPlan.of(build_config({"task": {"name": "regression"}}), cpu, ProcessInfo()).config.trainer
    assert (regression.checkpoint.monitor, regression.checkpoint.mode) == ("val/mae", "min")
    assert regression.early_stopping.mode == "min"  # val/loss
    mine = RunPlan.of(build_config({"trainer": {"checkpoint": {"monitor": "val/loss"}}}), cpu, ProcessInfo())
    assert (mine.config.trainer.checkpoint.monitor, mine.config.trainer.checkpoint.mode) == ("val/loss", "min")
    assert "trainer.checkpoint.monitor" not in mine.derived()  # the user's own value is not called derived


def test_the_plan_scales_the_learning_rate_to_its_global_batch():
    cfg = build_config({"data": {"batch_size": 32}, "optim": {"name": "sgd", "lr_base": 0.1, "lr_base_size": 256},
                        "trainer": {"accumulate": 2}})
    one = RunPlan.of(cfg, torch.device("cpu"), ProcessInfo())
    four = RunPlan.of(cfg, torch.device("cpu"), ProcessInfo(world_size=4, local_world_size=4))
    assert (one.global_batch, four.global_batch) == (64, 256)
    assert one.lr == 0.1 * 64 / 256 and four.lr == 0.1  # sgd: linear scaling
    assert four.resolved()["optim.lr"].startswith("0.1 (lr_base 0.1 per 256, linear-scaled to the global batch 256)")
    assert one.precision == "32"
