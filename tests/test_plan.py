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
