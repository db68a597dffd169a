"""Targets beyond one class per sample, as files write them and splits need them: label sets (`cat|dog`) as
multi-hot vectors, numeric columns as values, and the keys that stratify splits and folds for each task
(classes; the rarest label of a sample, or iteratively by label for folds; quantile bins of the values)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from kiln.errors import KilnError

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def label_set(raw: str, separator: str) -> list[str]:
    """`cat|dog` -> ["cat", "dog"]; an empty cell is a sample with no label."""
    return [part.strip() for part in raw.split(separator) if part.strip()]


def label_names(raws: Sequence[str], separator: str) -> list[str]:
    """Every label of the training file, sorted."""
    return sorted({name for raw in raws for name in label_set(raw, separator)})


def multi_hot(raw: str, index: dict[str, int], separator: str) -> tuple[list[float] | None, str]:
    """(multi-hot vector, "") or (None, what is wrong) for one sample's label set."""
    hot = [0.0] * len(index)
    for name in label_set(raw, separator):
        if name not in index:
            return None, f"label {name!r} is not among the training labels ({', '.join(list(index)[:10])})"
        hot[index[name]] = 1.0
    return hot, ""


def numbers(raws: Sequence[str], columns: Sequence[str]) -> tuple[list[float] | None, str]:
    """(values, "") or (None, what is wrong) for one sample's regression targets."""
    values = []
    for raw, column in zip(raws, columns):
        raw = raw.strip()
        value = float(raw) if NUMBER.fullmatch(raw) else math.nan
        if not math.isfinite(value):
            return None, (f"regression target {raw!r} in column {column!r} is not a number" if raw else
                          f"empty regression target in column {column!r}")
        values.append(value)
    return values, ""


def parse_target(cells: Sequence[str], class_names: list[str], task: str, separator: str = "|",
                 one_based: bool = False) -> tuple[int | list[float] | None, str]:
    """(target, "") or (None, what is wrong) for one row's label cells: a class (its name, or its 0-based — with
    one_based, 1-based — number), a multi-hot vector (multilabel), values (regression, one cell per column)."""
    index = {name: i for i, name in enumerate(class_names)}
    if task == "multilabel":
        return multi_hot(cells[0], index, separator)
    if task == "regression":
        return numbers(cells, class_names)
    label = cells[0]
    cls = index.get(label)
    if cls is None and re.fullmatch(r"-?\d+", label):
        number = int(label) - (1 if one_based else 0)
        cls = number if 0 <= number < len(class_names) else None
    if cls is not None:
        return cls, ""
    if separator in label:
        return None, (f"label {label!r} holds several labels ({separator!r}-separated): that is a multilabel "
                      "dataset; set task.name=multilabel")
    valid = f"1..{len(class_names)}" if one_based else ", ".join(class_names[:10])
    return None, f"label {label!r} is not a class ({valid})"


def as_tensor(targets: Sequence) -> torch.Tensor:
    """Class indices as int64 (N,); multi-hot vectors or values as float32 (N, k)."""
    if targets and isinstance(targets[0], (list, tuple)):
        return torch.tensor(targets, dtype=torch.float32)
    return torch.tensor(list(targets), dtype=torch.long)


def columns(setting: str | Sequence[str] | None) -> list[str]:
    """A label column setting as a list of column names."""
    if setting is None:
        return []
    return [setting] if isinstance(setting, str) else list(setting)


def refuse_label_sets(raws: Sequence[str], separator: str, where: Path | str) -> None:
    """A multiclass file whose labels look like label sets (`red|blue`) is a multilabel dataset: said before
    `red|blue` silently becomes a class of its own."""
    sets = [raw for raw in raws if separator in raw]
    if sets:
        raise KilnError(f"{where}: {len(sets)} label(s) such as {sets[0]!r} hold several labels ({separator!r}-"
                        "separated): that is a multilabel dataset; set task.name=multilabel (or, if your class names "
                        "contain it, set data.label_separator to a character they do not)")


def check_columns(task: str, label_columns: list[str], key: str) -> None:
    if len(label_columns) > 1 and task != "regression":
        raise KilnError(f"{key} lists {len(label_columns)} columns; several label columns are regression targets "
                        f"(task.name=regression), a {task} task reads one")


# --------------------------------------------------------------------------- what splits are stratified by

def split_keys(targets: torch.Tensor, task: str) -> torch.Tensor:
    """One integer per sample for a stratified validation/test split: the class (multiclass), the sample's
    rarest label (multilabel; no label = its own group), or the quantile bin of the values (regression)."""
    if task == "multiclass":
        return targets
    if task == "multilabel":
        y = targets.bool()
        frequency = y.sum(0).float()
        rarity = torch.where(y, frequency.expand_as(y), torch.full_like(y, math.inf, dtype=torch.float32))
        rarest = rarity.argmin(1)
        return torch.where(y.any(1), rarest + 1, torch.zeros_like(rarest))
    return quantile_bins(targets, 10)


def fold_keys(targets: torch.Tensor, task: str, folds: int) -> torch.Tensor:
    """What k-fold cross-validation stratifies by: classes, label sets (multi-hot, dealt iteratively by label), or
    quantile bins holding at least `folds` samples each."""
    if task == "multilabel":
        return targets.bool()
    if task == "regression":
        return quantile_bins(targets, max(1, min(10, len(targets) // folds)))
    return targets


def quantile_bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-count bins of the values (the mean over target columns, standardised): bin = rank * bins // n."""
    v = values.double().reshape(len(values), -1)
    v = ((v - v.mean(0)) / v.std(0, correction=0).clamp_min(1e-12)).mean(1)
    rank = torch.empty(len(v), dtype=torch.long)
    rank[torch.argsort(v, stable=True)] = torch.arange(len(v))
    return rank * bins // max(len(v), 1)


def iterative_folds(y: torch.Tensor, folds: int, order: torch.Tensor) -> torch.Tensor:
    """The fold (0..folds-1) of each sample of multi-hot `y` (N, L), by iterative stratification (Sechidis et al.,
    2011): labels are taken rarest first, and each sample carrying the label goes to the fold that still wants it
    most (then the fold that wants most samples, then the lowest), so every fold gets its share of each label.
    `order`: a seeded permutation that decides the order of samples within a label."""
    y = y.bool()
    n = len(y)
    fold_of = torch.full((n,), -1, dtype=torch.long)
    want = torch.full((folds,), n / folds, dtype=torch.float64)
    want_label = y.sum(0).double()[None, :].repeat(folds, 1) / folds  # (folds, L)
    y = y[order]
    left = torch.ones(n, dtype=torch.bool)
    while left.any():
        counts = y[left].sum(0)
        if not counts.any():
            break
        label = int(torch.where(counts > 0, counts, counts.new_tensor(n + 1)).argmin())
        for i in (left & y[:, label]).nonzero().flatten().tolist():
            score = want_label[:, label] * (n + 1) * folds + want  # label need first, then overall need
            fold = int(score.argmax())
            fold_of[order[i]] = fold
            want[fold] -= 1
            want_label[fold] -= y[i].double()
            left[i] = False
    for i in left.nonzero().flatten().tolist():  # samples without labels: where most samples are wanted
        fold = int(want.argmax())
        fold_of[order[i]] = fold
        want[fold] -= 1
    return fold_of


# --------------------------------------------------------------------------- showing targets

def target_text(y: torch.Tensor, names: list[str], task: str) -> str:
    """One sample's target as a person reads it: `cat`, `cat|dog` (`(none)`), `brightness 120 x 0.5`."""
    if task == "multilabel":
        return "|".join(n for n, v in zip(names, y.tolist()) if v) or "(none)"
    if task == "regression":
        return " ".join(f"{n} {v:.4g}" for n, v in zip(names, y.reshape(-1).tolist()))
    return names[int(y)] if names else str(int(y))


def split_summary(targets: torch.Tensor, names: list[str], task: str) -> str:
    """A split's targets in one line: class counts, label counts, or each target's range."""
    if task == "multilabel":
        counts = targets.sum(0).long().tolist()
        return "label counts: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts))
    if task == "regression":
        y = targets.float().reshape(len(targets), -1)
        return "targets: " + ", ".join(f"{n} mean {m:.4g} std {s:.4g} range {lo:.4g}–{hi:.4g}" for n, m, s, lo, hi in
                                       zip(names, y.mean(0).tolist(), y.std(0).tolist(), y.min(0).values.tolist(),
                                           y.max(0).values.tolist()))
    counts = torch.bincount(targets, minlength=len(names)).tolist()
    return "class counts: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts))
