"""What every data source shares once it knows its samples: which of them are the train, val and test splits
(seeded; stratified by what the source knows of its targets; data.cv's folds; overfit_batches), in which order
each split is batched, and how the splits become `Data`.

A source says what it has — `Pool`s: the sample sets it found (a training file, a test file, an image folder's
val/, one list of everything), each with its size and, when known, the keys its samples are stratified and dealt
into folds by — and `plan_splits` turns them into indices; `sampler_for` gives a split its batch order (shuffled,
class-balanced, sharded over the processes). The source then only reads the samples those indices name: as a
`Source`, it makes one split's batches from its pool and indices, and `assemble` turns any source and its split
plan into the `Data` the rest of kiln reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from kiln.config import DataConfig
from kiln.data.info import Data, DataInfo, DataRequest
from kiln.data.loaders import Batches, EpochBatchSampler, GroupedEpochSampler, WeightedEpochSampler, eval_batch_size
from kiln.data.splits import cv_folds, stratified_split, train_val_split

log = logging.getLogger("kiln")

# A split's samples: (the pool they are drawn from, their indices in it).
Drawn = tuple[str, torch.Tensor]


@dataclass(frozen=True)
class Pool:
    """A set of samples a source found. Named `train`, `val`, `test` (given as such: files, folders), or `all`
    (one list that kiln splits into all three)."""

    size: int
    strata: torch.Tensor | None = None  # what a split kiln makes of it keeps the shares of (None: a plain shuffle)
    folds: torch.Tensor | None = None  # what data.cv's folds are dealt by (None: by position)
    chosen_val: torch.Tensor | None = None  # the samples named as the validation split (data.val_files)


def pools_needed(found: tuple[str, ...], splits: tuple[str, ...], cfg: DataConfig) -> list[str]:
    """Which of the pools a source `found` the requested splits are drawn from (a source reads only those): a
    cv fold tests on part of the training pool, validation comes from it when there is no val pool."""
    if "all" in found:
        return ["all"]
    wanted = {"train"} if {"train", "val"} & set(splits) or ("test" in splits and cfg.cv is not None) else set()
    wanted |= {s for s in splits if s in found and not (s == "test" and cfg.cv is not None)}
    return [name for name in found if name in wanted]


def plan_splits(pools: dict[str, Pool], cfg: DataConfig, overfit_batches: int,
                splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, Drawn]:
    """split -> (pool, indices) for the requested splits that have samples. The same (pools, settings) give the
    same indices in every run and resume."""
    plan = _from_all(pools["all"], cfg, overfit_batches, splits) if "all" in pools else \
        _from_given(pools, cfg, overfit_batches, splits)
    if overfit_batches and "train" in plan:
        plan["val"] = plan["train"]  # overfitting is judged on the batches it trains on
    return {split: plan[split] for split in splits if split in plan and len(plan[split][1])}


def _from_all(pool: Pool, cfg: DataConfig, overfit_batches: int, splits: tuple[str, ...]) -> dict[str, Drawn]:
    """One list of every sample: data.test_split set aside first (a cv's folds are cut from the rest, never
    from the test split), then the held-out fold, then validation."""
    rest = torch.arange(pool.size)
    if cfg.test_split == "all":
        return {"test": ("all", rest)} if "test" in splits else {}
    plan: dict[str, Drawn] = {}
    strata, folds = pool.strata, pool.folds
    assert strata is not None and folds is not None, "a pool kiln cuts into all three splits knows its targets"
    if cfg.test_split:
        rest, test_idx = stratified_split(strata, cfg.test_split, cfg.split_seed, "data.test_split")
        plan["test"] = ("all", test_idx)
    if cfg.cv is not None:  # the held-out fold is this run's test split
        plan["test"] = ("all", rest[cv_folds(len(rest), cfg, folds[rest])[1]])
    # the same fold keys as the held-out fold above, so the pool trained on is exactly the other folds
    train_pos, val_pos = train_val_split(len(rest), cfg, overfit_batches, strata[rest], folds[rest])
    plan["train"], plan["val"] = ("all", rest[train_pos]), ("all", rest[val_pos])
    if pool.chosen_val is not None:
        plan["train"], plan["val"] = _chosen("all", rest, pool.chosen_val)
    return plan


def _chosen(name: str, rest: torch.Tensor, chosen: torch.Tensor) -> tuple[Drawn, Drawn]:
    """(train, val) of the samples `rest` when `chosen` name the validation samples (data.val_files)."""
    named = torch.isin(rest, chosen)
    return (name, rest[~named]), (name, rest[named])


def _from_given(pools: dict[str, Pool], cfg: DataConfig, overfit_batches: int,
                splits: tuple[str, ...]) -> dict[str, Drawn]:
    """Train (and val, when the source has none of its own) from the training pool; a test pool as it is, unless
    data.cv makes the held-out fold of the training pool the test split."""
    plan: dict[str, Drawn] = {}
    train = pools.get("train")
    if train is not None:
        if "val" in pools:
            if cfg.val_split and "val" in splits:
                log.info("validating on the val/ folder (data.val_split is not used)")
            keep = cfg.model_copy(update={"val_split": 0})
            train_idx, _ = train_val_split(train.size, keep, overfit_batches, train.strata, train.folds)
            plan["train"], plan["val"] = ("train", train_idx), ("val", torch.arange(pools["val"].size))
        else:
            train_idx, val_idx = train_val_split(train.size, cfg, overfit_batches, train.strata, train.folds)
            plan["train"], plan["val"] = ("train", train_idx), ("train", val_idx)
            if train.chosen_val is not None:
                held = cv_folds(train.size, cfg, train.folds)[0] if cfg.cv is not None else torch.arange(train.size)
                plan["train"], plan["val"] = _chosen("train", held, train.chosen_val)
        if cfg.cv is not None:
            plan["test"] = ("train", cv_folds(train.size, cfg, train.folds)[1])
    if "test" in pools and cfg.cv is None:
        plan["test"] = ("test", torch.arange(pools["test"].size))
    return plan


def sampler_for(train: bool, count: int, cfg: DataConfig, request: DataRequest,
                labels: torch.Tensor | None = None, drop_last: bool = True,
                groups: torch.Tensor | None = None) -> EpochBatchSampler:
    """A split's batch order: the training split shuffled — or class-balanced with data.sampler=weighted, from
    `labels`; or, when its samples are read in `groups` (tar shards), group by group in a seeded order through a
    seeded shuffle buffer — unless overfit_batches pins it (then in order); every other split in order, at the
    evaluation batch size, no sample dropped. `drop_last`: whether a shuffled split drops its last, partial batch."""
    shuffled = train and not request.overfit_batches
    where = {"seed": request.seed, "rank": request.rank, "world_size": request.world_size}
    if shuffled and cfg.sampler == "weighted":
        assert labels is not None, "a weighted sampler draws by the training labels"
        return WeightedEpochSampler(labels, cfg.batch_size, **where)
    if shuffled and groups is not None:
        return GroupedEpochSampler(groups, cfg.batch_size, buffer=cfg.shuffle_buffer, drop_last=drop_last, **where)
    size = cfg.batch_size if train else eval_batch_size(cfg)
    return EpochBatchSampler(count, size, shuffle=shuffled, drop_last=shuffled and drop_last, **where)


class Source(Protocol):
    """A data source that has found its samples, as `assemble` sees it: what the model and the metrics need to
    know of the data (`info`), how its batches are served (`loader`: resident | dataloader), and one split's
    batches from a pool and indices into it (drawn by `plan_splits`, or the source's own Datasets)."""

    info: DataInfo
    loader: str

    def batches(self, split: str, pool: str, idx: torch.Tensor) -> Batches: ...


@dataclass(frozen=True)
class Found:
    """What a source hands `assemble` besides its batches: the text vocabulary it encoded with, and the data.*
    settings it derived from the data (the run plan records them)."""

    vocab: Any = None
    derived: dict[str, Any] = field(default_factory=dict)


def assemble(source: Source, plan: dict[str, Drawn], request: DataRequest, found: Found = Found()) -> Data:
    """The requested splits of `plan` as the source's batches, with their sizes: the one way any source becomes
    `Data`."""
    wanted = {split: drawn for split, drawn in plan.items() if split in request.splits}
    out = {split: source.batches(split, pool, idx) for split, (pool, idx) in wanted.items()}
    return Data(source.info, out.get("train"), out.get("val"), out.get("test"),
                {split: len(idx) for split, (_, idx) in wanted.items()}, source.loader, found.vocab,
                dict(found.derived))
