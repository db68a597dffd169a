"""Datasets and batch sources: `build_data(cfg.data, ...)` is the one entry point."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from kiln.config import DataConfig
from kiln.data.loaders import Batches
from kiln.data.registry import DATASETS, get_dataset
from kiln.errors import KilnError

log = logging.getLogger("kiln")

__all__ = ["DATASETS", "Batches", "Data", "DataInfo", "build_data", "choose_loader", "cv_folds", "split_indices"]


@dataclass(frozen=True)
class DataInfo:
    """What a model, the metrics and `kiln predict` need to know about the data."""

    name: str
    kind: str  # "image" | "text" | "custom" (the user's own Dataset)
    num_classes: int  # the model's outputs: classes, labels (multilabel) or target values (regression)
    class_names: list[str]  # their names
    in_channels: int = 0  # images
    image_size: tuple[int, int] = (0, 0)
    mean: tuple[float, ...] = (0.0,)  # per channel, of pixels in [0, 1]
    std: tuple[float, ...] = (1.0,)
    stored_size: tuple[int, int] = (0, 0)  # image files: decoded at this size, then centre-cropped to image_size
    vocab_size: int = 0  # text
    pad_id: int = 0

    def model_args(self) -> dict[str, Any]:
        """The constructor arguments a model takes from the data rather than from model.args."""
        if self.kind == "text":
            return {"vocab_size": self.vocab_size, "num_classes": self.num_classes, "pad_id": self.pad_id}
        if self.kind == "custom":  # the user's own Dataset: only the class count is known
            return {"num_classes": self.num_classes}
        return {"in_channels": self.in_channels, "image_size": self.image_size, "num_classes": self.num_classes}


@dataclass
class Data:
    info: DataInfo
    train: Batches | None = None
    val: Batches | None = None
    test: Batches | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    loader: str = "dataloader"
    vocab: Any = None  # text: the training vocabulary, saved in the run folder

    def require(self, split: str) -> Batches:
        """The batches of `split` (train | val | test), which the caller asked build_data for."""
        batches = getattr(self, split)
        if batches is None:
            raise KilnError(f"the data has no {split} split here")
        return batches


def split_indices(n: int, val_split: float | int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of a seeded split; the same for the same (n, val_split, seed)."""
    num_val = int(round(n * val_split)) if isinstance(val_split, float) else int(val_split)
    if num_val >= n:
        raise KilnError(f"data.val_split={val_split} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[num_val:], order[:num_val].sort().values


def stratified_split(labels: torch.Tensor, amount: float | int, seed: int, what: str = "data.val_split"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) indices: a seeded split that holds out the same share of every class (largest-remainder
    rounding of each class's quota), so a small dataset's validation split still has every class."""
    n = len(labels)
    num = int(round(n * amount)) if isinstance(amount, float) else int(amount)
    if num >= n:
        raise KilnError(f"{what}={amount} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1 if n else 0).double()
    quota = counts * num / max(n, 1)
    take = quota.floor().long()
    extra = num - int(take.sum())
    if extra > 0:
        take[torch.argsort(quota - quota.floor(), descending=True, stable=True)[:extra]] += 1
    held = [order[labels[order] == c][:int(k)] for c, k in enumerate(take.tolist())]
    held_idx = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.long)
    mask = torch.ones(n, dtype=torch.bool)
    mask[held_idx] = False
    return order[mask[order]], held_idx


def cv_folds(n: int, cfg: DataConfig, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, held-out) indices of data.cv's fold over n training samples: a seeded order, then every class's
    samples dealt round-robin into the folds (stratified; classes or quantile bins, see targets.fold_keys), label
    sets (N, L) by iterative stratification, or the order itself cut when labels are unknown."""
    assert cfg.cv is not None
    folds = cfg.cv.folds
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed + 0xC5))
    fold_of = torch.empty(n, dtype=torch.long)
    if labels is None:
        fold_of[order] = torch.arange(n) % folds
    elif labels.ndim == 2:  # multilabel: label sets, dealt iteratively by label
        from kiln.data.targets import iterative_folds

        positives = labels.sum(0)
        scarce = ((positives > 0) & (positives < folds)).nonzero().flatten().tolist()
        if scarce and cfg.cv.fold == 1:
            log.warning("--folds %d: label(s) %s have fewer samples than folds, so some held-out folds lack them "
                        "(their per-label scores are undefined there)", folds, ", ".join(map(str, scarce[:10])))
        fold_of = iterative_folds(labels, folds, order)
    else:
        counts = torch.bincount(labels)
        smallest = int(counts[counts > 0].min())
        if smallest < folds:
            raise KilnError(f"--folds {folds} is more than the smallest class has samples ({smallest}): every fold "
                            "needs each class; use fewer folds")
        for c in labels.unique().tolist():
            members = order[labels[order] == c]
            fold_of[members] = torch.arange(len(members)) % folds
    held = fold_of == cfg.cv.fold - 1
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def train_val_split(n: int, cfg: DataConfig, overfit_batches: int = 0, labels: torch.Tensor | None = None,
                    fold_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of the training files as a run uses them: the seeded split (stratified by class when
    `labels` are given) — of the folds not held out, with data.cv — then the optional fixed subset; with
    overfit_batches, that many training batches, validated on themselves."""
    fold_labels = labels if fold_labels is None else fold_labels  # labels for the folds only (stratified folds)
    pool = cv_folds(n, cfg, fold_labels)[0] if cfg.cv is not None else torch.arange(n)
    if labels is None:
        train_pos, val_pos = split_indices(len(pool), cfg.val_split, cfg.split_seed)
    else:
        train_pos, val_pos = stratified_split(labels[pool], cfg.val_split, cfg.split_seed)
    train_idx, val_idx = pool[train_pos], pool[val_pos]
    if cfg.train_subset is not None:
        train_idx = train_idx[:cfg.train_subset]
    if overfit_batches:
        train_idx = train_idx[:overfit_batches * cfg.batch_size]
        val_idx = train_idx  # overfitting is judged on the batches it trains on
    return train_idx, val_idx


def eval_batch_size(cfg: DataConfig) -> int:
    """Validation and test batches: no gradients, so 4x the training batch fits unless set."""
    return cfg.eval_batch_size or 4 * cfg.batch_size


def choose_loader(setting: str, num_bytes: int, device: torch.device, max_mb: float | None) -> str:
    """`loader: auto` keeps the data resident on the device when it fits the budget."""
    if setting != "auto":
        return setting
    if max_mb is not None:
        budget = max_mb * 2**20
    elif device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] / 4  # leave the rest to activations, weights, optimizer
    elif device.type == "cpu":
        budget = float("inf")  # the tensors are in host memory whichever path reads them
    else:
        budget = 2 * 2**30
    return "resident" if num_bytes <= budget else "dataloader"


def build_data(cfg: DataConfig, *, seed: int, device: torch.device, splits: tuple[str, ...] = ("train", "val", "test"),
               channels_last: bool = False, overfit_batches: int = 0, rank: int = 0, world_size: int = 1,
               vocab: Any = None, task: str = "multiclass") -> Data:
    """Load the requested splits of `cfg.name` and wrap each in a batch source for `device`.

    `vocab` (text only): reuse a run's saved vocabulary instead of building one from the training split.
    `task` (task.name): how targets are read — class labels, label sets (multilabel) or numbers (regression).
    """
    if ":" in cfg.name:  # the user's own Dataset class
        from kiln.data.user import build_user_data

        return build_user_data(cfg, seed=seed, device=device, splits=splits, overfit_batches=overfit_batches,
                               rank=rank, world_size=world_size, task=task)
    spec = get_dataset(cfg.name)
    from kiln.tasks import TASKS

    if not TASKS[task].class_per_sample and spec.name not in ("image_csv", "text_csv", "image_folder"):
        raise KilnError(f"task.name={task} reads its targets from an image CSV (data.name: image_csv), a text CSV "
                        f"(text_csv) or your own Dataset; {spec.name} has one class label per sample "
                        "(task.name: multiclass)")
    common: dict[str, Any] = dict(seed=seed, device=device, splits=splits, overfit_batches=overfit_batches, rank=rank,
                  world_size=world_size, task=task)
    if spec.kind == "text":
        from kiln.data.text import build_text_data

        return build_text_data(spec, cfg, vocab=vocab, **common)
    if spec.name in ("image_folder", "image_csv"):
        from kiln.data.images import build_file_image_data

        return build_file_image_data(spec, cfg, channels_last=channels_last, **common)
    from kiln.data.images import build_image_data

    del common["task"]
    return build_image_data(spec, cfg, channels_last=channels_last, **common)
