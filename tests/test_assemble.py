"""kiln.data.assemble: the split plan and batch order every data source shares."""

import torch

from kiln.config import CvConfig, DataConfig
from kiln.data.assemble import Pool, plan_splits, pools_needed, sampler_for
from kiln.data.info import DataRequest
from kiln.data.loaders import WeightedEpochSampler

LABELS = torch.arange(60) % 3


def _cfg(**kw) -> DataConfig:
    return DataConfig(name="mnist", val_split=0.2, batch_size=8, **kw)


def test_a_training_pool_is_split_and_a_test_pool_is_kept_whole():
    plan = plan_splits({"train": Pool(60, LABELS, LABELS), "test": Pool(15)}, _cfg(), 0)
    (train_pool, train), (val_pool, val), (test_pool, test) = plan["train"], plan["val"], plan["test"]
    assert train_pool == val_pool == "train" and test_pool == "test"
    assert len(val) == 12 and not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(60))
    assert torch.bincount(LABELS[val]).tolist() == [4, 4, 4]  # stratified by the pool's strata
    assert torch.equal(test, torch.arange(15))
    assert torch.equal(plan_splits({"train": Pool(60, LABELS, LABELS)}, _cfg(), 0)["val"][1], val)  # seeded


def test_cv_folds_hold_out_every_training_sample_once_and_never_read_the_test_pool():
    held = []
    for k in (1, 2, 3):
        cfg = _cfg(cv=CvConfig(folds=3, fold=k))
        assert pools_needed(("train", "test"), ("train", "val", "test"), cfg) == ["train"]
        plan = plan_splits({"train": Pool(60, None, LABELS)}, cfg, 0)
        assert plan["test"][0] == "train"
        fold = set(plan["test"][1].tolist())
        assert not fold & (set(plan["train"][1].tolist()) | set(plan["val"][1].tolist()))
        held += fold
    assert sorted(held) == list(range(60))


def test_a_val_pool_of_its_own_is_used_whole_and_overfitting_validates_on_the_training_batches():
    plan = plan_splits({"train": Pool(60, LABELS, LABELS), "val": Pool(9)}, _cfg(), 0)
    assert len(plan["train"][1]) == 60 and plan["val"] == ("val", plan["val"][1]) and len(plan["val"][1]) == 9
    overfit = plan_splits({"train": Pool(60, LABELS, LABELS)}, _cfg(), 2)
    assert len(overfit["train"][1]) == 16 and torch.equal(overfit["val"][1], overfit["train"][1])


def test_one_list_of_everything_gives_all_three_splits_and_only_the_requested_ones_come_back():
    cfg = _cfg(test_split=0.25)
    plan = plan_splits({"all": Pool(60, LABELS, LABELS)}, cfg, 0)
    parts = [set(plan[s][1].tolist()) for s in ("train", "val", "test")]
    assert len(parts[2]) == 15 and sum(map(len, parts)) == 60 and set.union(*parts) == set(range(60))
    assert list(plan_splits({"all": Pool(60, LABELS, LABELS)}, cfg, 0, ("test",))) == ["test"]


def test_only_a_shuffled_training_split_drops_its_last_batch_and_weighting_needs_the_sampler_setting():
    request = DataRequest(device=torch.device("cpu"), seed=0)
    train = sampler_for(True, 60, _cfg(), request)
    assert train.shuffle and train.drop_last and train.batch_size == 8
    evaluation = sampler_for(False, 60, _cfg(), request)
    assert not evaluation.shuffle and not evaluation.drop_last and evaluation.batch_size == 32  # 4x: no gradients
    assert not sampler_for(True, 60, _cfg(), request, drop_last=False).drop_last  # text keeps its last batch
    assert isinstance(sampler_for(True, 60, _cfg(sampler="weighted"), request, LABELS), WeightedEpochSampler)
    pinned = sampler_for(True, 60, _cfg(), DataRequest(device=torch.device("cpu"), seed=0, overfit_batches=2))
    assert not pinned.shuffle

