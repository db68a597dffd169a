"""Class imbalance: task.class_weights (given or auto) and data.sampler: weighted — balanced, seeded, resumable,
one global draw shared out between DDP ranks."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from kiln.config import build_config, task_config
from kiln.core.errors import KilnError
from kiln.data.loaders import ResidentBatches, WeightedEpochSampler
from kiln.tasks import class_weights
from kiln.train import session

LABELS = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(100, dtype=torch.long)])  # 9:1


def test_the_weighted_draw_balances_the_classes_and_is_a_function_of_the_epoch():
    sampler = WeightedEpochSampler(LABELS, 50, seed=3)
    order = sampler.order(0)
    share = LABELS[order].float().mean().item()
    assert 0.42 < share < 0.58  # 10 % of the data, about half of the draw
    assert torch.equal(order, WeightedEpochSampler(LABELS, 50, seed=3).order(0))  # the same after a resume
    assert not torch.equal(order, sampler.order(1))


def test_ddp_ranks_share_out_one_global_draw():
    single = WeightedEpochSampler(LABELS, 50, seed=3, world_size=1)
    ranks = [WeightedEpochSampler(LABELS, 50, seed=3, rank=r, world_size=2) for r in range(2)]
    interleaved = torch.stack([r.order(4) for r in ranks], dim=1).flatten()
    assert torch.equal(interleaved, single.order(4))


def test_auto_class_weights_are_inverse_frequencies_and_a_wrong_length_is_refused(tmp_path, idx_root):
    from kiln.data.loaders import EpochBatchSampler, split_targets

    batches = ResidentBatches(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), LABELS,
                              sampler=EpochBatchSampler(1000, 100, shuffle=False, drop_last=False, seed=0),
                              transform=lambda x, g: x, device=torch.device("cpu"), seed=0)
    weights = class_weights(task_config(class_weights="auto"), lambda: split_targets(batches), 2)
    assert weights.tolist() == pytest.approx([1000 / (2 * 900), 1000 / (2 * 100)])
    cfg = build_config(tiny_config(tmp_path, idx_root, task={"class_weights": [1.0, 2.0]}))
    with pytest.raises(KilnError, match=r"task.class_weights has 2 values for 10 classes"):
        session.train(cfg, quiet=True)


def test_training_with_both_logs_the_weighted_objective(tmp_path, idx_root):
    cfg = build_config(tiny_config(tmp_path, idx_root, task={"class_weights": "auto"},
                                   data={"sampler": "weighted"}, trainer={"epochs": 1}))
    result = session.train(cfg, quiet=True)
    assert "train/objective" in result.metrics and result.test_metrics["acc"] > 0
