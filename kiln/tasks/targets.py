"""Targets beyond one class per sample, as files write them and splits need them: label sets (`cat|dog`) as
multi-hot vectors, numeric columns as values, quantile bins and iterative folds. Which of these a task uses is
the task's to say (kiln.tasks: parse_cells, split_keys, fold_keys)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from kiln.core.errors import KilnError

UNIT = "\x1f"  # joins the cells of several label columns of a row into one raw label (kiln.data's readers)
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


def infer_class_names(labels: list[str]) -> list[str]:
    """Integers 0..K-1 when every label is an integer, else the sorted distinct names."""
    distinct = sorted(set(labels))
    if distinct and all(re.fullmatch(r"\d+", x) for x in distinct):
        return [str(i) for i in range(max(int(x) for x in distinct) + 1)]
    return distinct


def as_tensor(targets: Sequence) -> torch.Tensor:
    """Class indices as int64 (N,) — or (N, k), one per label column (multihead); multi-hot vectors or values as
    float32 (N, k)."""
    if targets and isinstance(targets[0], (list, tuple)):
        whole = all(type(v) is int for v in targets[0])  # class indices per column, not values
        return torch.tensor(targets, dtype=torch.long if whole else torch.float32)
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


# --------------------------------------------------------------------------- what splits are stratified by

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
