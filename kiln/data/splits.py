"""Which samples go where: the seeded validation and test splits (stratified where the targets are known) and
k-fold cross-validation folds. The same (data, settings, seed) give the same split in every run and resume."""

from __future__ import annotations

import logging

import torch

from kiln.config import DataConfig
from kiln.core.errors import KilnError

log = logging.getLogger("kiln")


def split_indices(n: int, val_split: float | int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of a seeded split; the same for the same (n, val_split, seed)."""
    num_val = round(n * val_split) if isinstance(val_split, float) else int(val_split)
    if num_val >= n:
        raise KilnError(f"data.val_split={val_split} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[num_val:], order[:num_val].sort().values


def stratified_split(labels: torch.Tensor, amount: float | int, seed: int, what: str = "data.val_split"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) indices: a seeded split that holds out the same share of every class (largest-remainder
    rounding of each class's quota), so a small dataset's validation split still has every class."""
    n = len(labels)
    num = round(n * amount) if isinstance(amount, float) else int(amount)
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
        from kiln.tasks.targets import iterative_folds

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
