"""MixUp and CutMix: soft targets that sum to one, draws that are a pure function of (seed, epoch, batch), the loss
and the running accuracy on blended targets, exact resume, and clear errors where mixing has no meaning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from kiln.config import AugmentConfig, Config, MulticlassTaskConfig
from kiln.core.errors import KilnError
from kiln.data.mixing import BatchMix
from kiln.tasks.multiclass import MulticlassTask


def _mix(**augment) -> BatchMix:
    task = MulticlassTask(MulticlassTaskConfig(), 5)
    return BatchMix(AugmentConfig(**augment), seed=7, soft_targets=task.soft_targets)


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 12, 10, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("augment", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_mixed_targets_are_distributions_of_the_two_samples_shown(augment):
    mix = _mix(**augment)
    x, y = _batch()
    for b in range(20):
        mixed_x, soft = mix(x, y, epoch=0, batch=b)
        drawn = mix.draw(0, b, 12, 10)
        assert torch.allclose(soft.sum(1), torch.ones(16))
        own, partner = F.one_hot(y, 5).float(), F.one_hot(y.roll(1), 5).float()
        assert torch.allclose(soft, drawn.share * own + (1 - drawn.share) * partner)
        if drawn.kind == "cutmix":  # the partner's pixels fill exactly the box, whose area the partner's weight is
            top, left, bottom, right = drawn.box
            pasted = (mixed_x != x).any(1)
            assert pasted[:, :top].sum() == 0 and pasted[:, bottom:].sum() == 0
            assert 1 - drawn.share == pytest.approx((bottom - top) * (right - left) / 120)
        else:
            assert torch.allclose(mixed_x, drawn.share * x + (1 - drawn.share) * x.roll(1, 0), atol=1e-6)


def test_draws_are_a_pure_function_of_seed_epoch_and_batch():
    a, b = _mix(mixup=0.4, cutmix=1.0), _mix(mixup=0.4, cutmix=1.0)
    draws = [a.draw(e, i, 12, 10) for e in range(2) for i in range(10)]
    assert draws == [b.draw(e, i, 12, 10) for e in range(2) for i in range(10)]
    assert len({d.share for d in draws}) > 10  # and they do differ from batch to batch
    assert {d.kind for d in draws} == {"mixup", "cutmix"}


def test_mix_prob_and_mix_off_epoch_leave_batches_plain():
    x, y = _batch()
    never = _mix(mixup=0.4, mix_prob=0.0)
    assert all(never(x, y, 0, b)[1] is y for b in range(10))
    off = _mix(cutmix=1.0, mix_off_epoch=3)  # epochs 3.. (1-based) plain, 1 and 2 mixed
    assert off(x, y, 1, 0)[1].ndim == 2 and off(x, y, 2, 0)[1] is y
    some = [_mix(mixup=0.4, mix_prob=0.5).draw(0, b, 12, 10).kind for b in range(200)]
    assert 60 < some.count(None) < 140


def test_label_smoothing_applies_to_the_blended_targets():
    task = MulticlassTask(MulticlassTaskConfig(label_smoothing=0.1), 5)
    logits, soft = torch.randn(4, 5), torch.tensor([[0.7, 0.3, 0, 0, 0]] * 4)
    expected = -(((1 - 0.1) * soft + 0.1 / 5) * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(task.objective(logits, soft), expected)


def test_running_accuracy_against_blended_targets_weighs_each_class_by_its_share():
    task = MulticlassTask(MulticlassTaskConfig(), 3)
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]])
    soft = torch.tensor([[0.7, 0.3, 0], [0.7, 0.3, 0]])
    assert task.train_score_sum(logits, soft).item() == pytest.approx(1.0)  # 0.7 + 0.3


def test_inputs_that_cannot_be_blended_are_a_clear_error():
    mix = _mix(mixup=0.2)
    with pytest.raises(KilnError, match=r"must be a floating-point tensor.*torch.int64"):
        mix(torch.ones(4, 7, dtype=torch.long), torch.zeros(4, dtype=torch.long), 0, 0)
    with pytest.raises(KilnError, match=r"cutmix .*needs images"):
        _mix(cutmix=1.0)(torch.randn(4, 7), torch.zeros(4, dtype=torch.long), 0, 0)


def test_a_task_whose_targets_cannot_be_blended_is_refused_before_training(tmp_path, idx_root, cli):
    from conftest import write_config

    cfg = tiny_config(tmp_path, idx_root, task={"name": "regression"}, data={"augment": {"mixup": 0.2}})
    out = cli("train", write_config(tmp_path, cfg))
    assert out.returncode == 2
    assert "no meaning for task.name=regression" in out.stderr and not (tmp_path / "runs").exists()


def test_mixup_and_cutmix_train_and_resume_bit_exact_mid_epoch(tmp_path, idx_root, monkeypatch):
    from conftest import assert_resumes_bit_exact

    kinds = []
    mixed = BatchMix.__call__

    def counted(self, inputs, targets, epoch, batch):
        kinds.append(self.draw(epoch, batch, *inputs.shape[-2:]).kind)
        return mixed(self, inputs, targets, epoch, batch)

    monkeypatch.setattr(BatchMix, "__call__", counted)

    def config_for(folder: str) -> Config:
        cfg = tiny_config(tmp_path / folder, idx_root, trainer={"epochs": 2},
                          data={"augment": {"mixup": 0.4, "cutmix": 1.0, "mix_prob": 0.8}},
                          task={"name": "multiclass", "label_smoothing": 0.1})
        return Config.model_validate(cfg)

    assert_resumes_bit_exact(config_for, stop_at=4)
    assert {"mixup", "cutmix", None} <= set(kinds)  # the training batches were mixed, both ways, and some not
    metrics = (next((tmp_path / "full" / "runs").glob("*/*")) / "metrics.jsonl").read_text()
    assert '"train/acc"' in metrics and '"val/acc"' in metrics
