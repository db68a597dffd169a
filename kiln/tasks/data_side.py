"""What the data side asks of a task, known from task.name alone before any model exists (class attributes and
class methods): how files, splits and datasets give its targets. The data code never names a task."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from kiln.core.errors import KilnError


class TargetsSide:
    """The defaults: one class index per sample."""

    name = ""
    noun = "classes"  # what the model's outputs are called: classes | labels | targets
    several_columns = False  # a file may give one target per column (regression)
    empty_label_ok = False  # a sample may have no target at all (multilabel: no label)
    class_per_sample = True  # one class per sample: a class folder, a registered dataset's label can serve it
    file_hint = "classes"  # what a CSV row gives for this task, for messages
    sources = "an image CSV (data.name: image_csv), a text CSV (text_csv) or your own Dataset"  # for messages
    default_count: int | None = None  # the output count of your own Dataset that does not say (regression: 1)

    # -- targets as files, splits and datasets give them (the defaults: one class index per sample)
    @classmethod
    def parse_cells(cls, cells: Sequence[str], names: list[str], separator: str = "|", one_based: bool = False
                    ) -> tuple[Any, str]:
        """A class: its name, or its 0-based (with one_based, 1-based) number."""
        label = cells[0]
        cls_index = {name: i for i, name in enumerate(names)}.get(label)
        if cls_index is None and re.fullmatch(r"-?\d+", label):
            number = int(label) - (1 if one_based else 0)
            cls_index = number if 0 <= number < len(names) else None
        if cls_index is not None:
            return cls_index, ""
        if separator in label:
            return None, (f"label {label!r} holds several labels ({separator!r}-separated): that is a multilabel "
                          "dataset; set task.name=multilabel")
        valid = f"1..{len(names)}" if one_based else ", ".join(names[:10])
        return None, f"label {label!r} is not a class ({valid})"

    @classmethod
    def target_names(cls, given: list[str] | None, raws: list[str], label_columns: list[str], separator: str,
                     where: Any) -> list[str]:
        from kiln.tasks.targets import infer_class_names, refuse_label_sets

        if given:
            return list(given)
        refuse_label_sets(raws, separator, where)
        return infer_class_names([r for r in raws if r])

    @classmethod
    def split_keys(cls, targets: torch.Tensor) -> torch.Tensor:
        return targets

    @classmethod
    def target_text(cls, y: torch.Tensor, names: list[str]) -> str:
        """One sample's target as a person reads it (default: its class)."""
        return names[int(y)] if names else str(int(y))

    @classmethod
    def split_summary(cls, targets: torch.Tensor, names: list[str]) -> str:
        counts = torch.bincount(targets, minlength=len(names)).tolist()
        return "class counts: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts))

    @classmethod
    def check_columns(cls, label_columns: list[str], key: str) -> None:
        if len(label_columns) > 1 and not cls.several_columns:
            raise KilnError(f"{key} lists {len(label_columns)} columns; several label columns are regression targets "
                            f"(task.name=regression), a {cls.name} task reads one")


    @classmethod
    def fold_keys(cls, targets: torch.Tensor, folds: int) -> torch.Tensor:
        """What k-fold cross-validation stratifies by (class indices (N,), or label sets (N, L))."""
        return cls.split_keys(targets)



    @classmethod
    def default_names(cls, count: int) -> list[str]:
        """Output names for your own Dataset that has none."""
        return [str(i) for i in range(count)]

    @classmethod
    def collate_targets(cls, targets: list[Any]) -> Any:
        """Your own Dataset's targets of one batch (one per sample, as its __getitem__ returns them) as the loss and
        metrics take them. Default: PyTorch's default_collate (numbers -> a tensor). A task whose targets are not
        tensors (a list of dicts per sample, variable-size) returns them as they are, or in a form of its own;
        kiln moves the tensors in them to the device."""
        from torch.utils.data import default_collate

        return default_collate(targets)

    @classmethod
    def checked_batch(cls, targets: Any, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> Any:
        """Your own Dataset's batch of targets as the loss needs them, or a KilnError saying what is wrong
        (`shape`: the batch described; `sample(i)`: the dataset index of its i-th sample). Default: as batched."""
        return targets

