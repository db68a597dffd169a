"""Several heads: one class in each of several label columns (mask x gender x age), one backbone. The model's output
is the heads' class scores side by side (kiln's models, torchvision's and timm's get one output layer of every
column's classes: the same as one linear head per column); the task splits it per column.

Output names are `column=value` (e.g. `mask=worn`), grouped by column in the order the columns are listed; the
columns and each one's class count are recorded in the run's config (task.columns, task.heads)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kiln.config import MultiheadTaskConfig
from kiln.core.errors import KilnError
from kiln.tasks.base import Metrics, Prediction, Task

SEP = "="  # column=value


def heads_of(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(column, its values) of each head, in order, from output names `column=value`."""
    heads: dict[str, list[str]] = {}
    for name in names:
        column, _, value = name.partition(SEP)
        heads.setdefault(column, []).append(value)
    return list(heads.items())


class MultiheadTask(Task):
    """Cross-entropy per head, summed with task.weights (also the reported loss); accuracy and macro F1 per head,
    and acc_all: the share of samples with every head right."""

    name = "multihead"
    train_metric = "acc_all"
    headline = "acc_all"
    summary_metrics = ("loss", "acc_all")
    noun = "classes over the label columns"
    several_columns = True
    class_per_sample = False
    sources = "an image CSV with several label columns (data.name: image_csv) or your own Dataset"
    file_hint = "classes, one per label column"
    exported = ("columns", "heads", "combine")
    output_doc = "logits of every head side by side (batch, sum of task.heads); softmax each head's slice"

    def __init__(self, cfg: MultiheadTaskConfig, num_classes: int | None):
        super().__init__(cfg, num_classes)
        self.cfg: MultiheadTaskConfig = cfg
        self.sizes = list(cfg.heads or ([num_classes] if num_classes else []))
        self.columns = list(cfg.columns or [f"head{i}" for i in range(len(self.sizes))])
        weights = cfg.weights or [1.0] * len(self.sizes)
        if cfg.heads is not None and len(weights) != len(self.sizes):  # the heads are known once the data is read
            raise KilnError(f"task.weights has {len(weights)} values for {len(self.sizes)} label columns "
                            f"({', '.join(self.columns)}); give one per column")
        self.weights = weights

    def _split(self, outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return outputs.split(self.sizes, dim=1)

    # -- training
    def task_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_sum(outputs, targets) / len(targets)

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sum((w * F.cross_entropy(o.float(), targets[:, h], reduction="sum")
                    for h, (w, o) in enumerate(zip(self.weights, self._split(outputs)))),
                   outputs.new_zeros((), dtype=torch.float32))

    def _all_right(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        right = torch.stack([o.argmax(1) == targets[:, h] for h, o in enumerate(self._split(outputs))], 1)
        return right.all(1)

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._all_right(outputs, targets).sum()

    # -- metrics
    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        """Per head: accuracy and macro F1 (`acc/<column>`, `f1_macro/<column>`); acc_all: every head right."""
        from torchmetrics import MeanMetric, MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        groups: list[tuple[Any, Any]] = [
            (MetricCollection({"acc_all": MeanMetric()}).to(device),
             lambda o, t: (self._all_right(o, t).float(),))]
        offsets = [sum(self.sizes[:h]) for h in range(len(self.sizes))]
        for h, (column, size) in enumerate(zip(self.columns, self.sizes)):
            collection = MetricCollection({"acc": MulticlassAccuracy(size, average="micro", validate_args=False),
                                           "f1_macro": MulticlassF1Score(size, average="macro", validate_args=False)},
                                          postfix=f"/{column}").to(device)
            groups.append((collection, _head(offsets[h], size, h)))
        return Metrics(*groups)

    def val_metrics(self) -> list[str]:
        return ["acc_all", *[f"{m}/{c}" for c in self.columns for m in ("acc", "f1_macro")]]

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        per_head = {key: raw[key] for key in self.val_metrics() if key != "acc_all"}
        return {"loss": raw["loss"], "acc_all": raw["acc_all"], **per_head, "num_samples": raw["num_samples"],
                "columns": self.columns, "class_names": names}

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> float:
        """The share of samples with every head right."""
        return float(self._all_right(predictions, targets).float().mean())

    def check_targets(self, class_names: list[str], train_targets: torch.Tensor | None, where: str) -> None:
        for column, values in heads_of(class_names):
            if len(values) < 2:
                raise KilnError(f"{where}: label column {column!r} has {len(values)} class ({', '.join(values)}); "
                                "each head needs at least two classes to tell apart")

    def check_message(self) -> str:
        return (f"The multihead task needs one class index per label column and sample (an integer tensor (batch, "
                f"{len(self.sizes)})) and outputs (batch, {sum(self.sizes)})")

    @classmethod
    def describe(cls, results: Mapping[str, Any]) -> str:
        heads = [k for k in results if k.startswith("acc/")]
        keys = ["loss", "acc_all", *heads]
        return " | ".join(f"{k} {results[k]:.4f}" for k in keys if isinstance(results.get(k), (int, float)))

    # -- predictions
    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Each head's class probabilities, side by side (B, sum of heads)."""
        return torch.cat([o.float().softmax(1) for o in self._split(outputs)], 1)

    def answers(self, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
        """Each column's class and its probability; with task.combine=product the combined class index too."""
        heads = heads_of(names)
        out = []
        for text, p in zip(inputs, predicted):
            picks = [(column, values[int(part.argmax())], float(part.max()))
                     for (column, values), part in zip(heads, p.split([len(v) for _, v in heads]))]
            top = [(f"{column}={value}", prob) for column, value, prob in picks]
            if self.cfg.combine == "product":
                top.append(("class", float(self.combined([values.index(v) for (_, values), (_, v, _) in
                                                         zip(heads, picks)]))))
            out.append(Prediction(text, " ".join(name for name, _ in top[:len(picks)]), None, top, self.name))
        return out

    def combined(self, indices: Sequence[int]) -> int:
        """The heads' class indices as one class: row-major over the columns as listed."""
        index = 0
        for i, size in zip(indices, self.sizes):
            index = index * size + i
        return index

    @classmethod
    def prediction_text(cls, r: Prediction) -> str:
        return "  ".join(f"{name} {p:.3f}" if name != "class" else f"class {int(p)}" for name, p in r.top)

    @classmethod
    def prediction_json(cls, r: Prediction) -> dict[str, Any]:
        heads = [(n.partition(SEP), p) for n, p in r.top if n != "class"]
        out: dict[str, Any] = {"input": r.input, "labels": {c: v for (c, _, v), _ in heads},
                               "probabilities": {c: p for (c, _, _), p in heads}}
        combined = [int(p) for n, p in r.top if n == "class"]
        if combined:
            out["class"] = combined[0]
        return out

    @classmethod
    def csv_header(cls, first: Prediction | None) -> list[str]:
        """One column per head (its class), and `class` with task.combine=product."""
        return ["file", *[n.partition(SEP)[0] if n != "class" else n for n, _ in (first.top if first else [])]]

    @classmethod
    def csv_row(cls, r: Prediction) -> list[str]:
        return [r.input, *[n.partition(SEP)[2] if n != "class" else str(int(p)) for n, p in r.top]]

    # -- targets as files give them: one cell per label column
    @classmethod
    def parse_cells(cls, cells: Sequence[str], names: list[str], separator: str = "|", one_based: bool = False
                    ) -> tuple[list[int] | None, str]:
        heads = heads_of(names)
        if len(cells) != len(heads):
            return None, f"{len(cells)} label cells for {len(heads)} label columns"
        target = []
        for cell, (column, values) in zip(cells, heads):
            if not cell:
                return None, f"label column {column!r} is empty"
            if cell not in values:
                return None, f"{column} {cell!r} is not one of its classes ({', '.join(values[:10])})"
            target.append(values.index(cell))
        return target, ""

    @classmethod
    def target_names(cls, given: list[str] | None, raws: list[str], label_columns: list[str], separator: str,
                     where: Any) -> list[str]:
        """`column=value` for every class of every column: data.class_names when given (in that form), else the
        values each column holds in the training file, sorted (numbers numerically)."""
        from kiln.tasks.targets import UNIT, infer_class_names

        if len(label_columns) < 2:
            raise KilnError(f"task.name=multihead reads several label columns; {where} names one "
                            "(set data.label_column: [first, second, ...])")
        if given:
            return list(given)
        cells = [raw.split(UNIT) for raw in raws]
        return [f"{column}{SEP}{value}" for j, column in enumerate(label_columns)
                for value in infer_class_names([row[j] for row in cells if len(row) > j and row[j]])]

    @classmethod
    def split_keys(cls, targets: torch.Tensor) -> torch.Tensor:
        """The combination of the heads' classes (so a split keeps every combination's share)."""
        y = targets.long()
        key = torch.zeros(len(y), dtype=torch.long)
        for h in range(y.shape[1]):
            key = key * (int(y[:, h].max()) + 1 if len(y) else 1) + y[:, h]
        return key

    @classmethod
    def target_text(cls, y: torch.Tensor, names: list[str]) -> str:
        return ", ".join(f"{column}={values[int(i)]}" for (column, values), i in zip(heads_of(names), y.tolist()))

    @classmethod
    def split_summary(cls, targets: torch.Tensor, names: list[str]) -> str:
        parts = []
        for h, (column, values) in enumerate(heads_of(names)):
            counts = torch.bincount(targets[:, h].long(), minlength=len(values)).tolist()
            parts.append(f"{column}: " + ", ".join(f"{v} {c}" for v, c in zip(values, counts)))
        return "class counts — " + "; ".join(parts)

    @classmethod
    def checked_batch(cls, targets: Any, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> torch.Tensor:
        """Your own Dataset's targets: an integer tensor (batch, columns), or a dict of one per column."""
        if isinstance(targets, dict):
            targets = torch.stack([torch.as_tensor(v) for v in targets.values()], 1)
        if not isinstance(targets, torch.Tensor) or targets.ndim != 2 or targets.dtype.is_floating_point:
            raise KilnError(f"{shape}; the multihead task needs one integer class index per label column and sample")
        return targets.long()


def _head(offset: int, size: int, h: int) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """What one head's metrics are fed: its slice of the outputs, its column of the targets."""
    return lambda outputs, targets: (outputs[:, offset:offset + size], targets[:, h])
