"""The task: what depends on the kind of problem — the head's output size, the training loss, the metrics and
the names they are logged under, and how outputs become predictions. The loop never names a loss.

`task.name`: multiclass (one label per sample), multilabel (any number of labels), regression (numbers), or a task
of your own (`package.module:Class`, a subclass of `Task`: the same interface kiln's tasks implement).
`task_class(name)` is the one way to the class of a name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from kiln.config import (
    DetectionTaskConfig,
    MulticlassTaskConfig,
    MultiheadTaskConfig,
    MultilabelTaskConfig,
    OwnTaskConfig,
    RegressionTaskConfig,
    SegmentationTaskConfig,
    TaskConfig,
)
from kiln.core.errors import KilnError
from kiln.core.user_code import names_code
from kiln.tasks.base import Metrics, Prediction, Task, known_direction, to_columns
from kiln.tasks.detection import DetectionTask
from kiln.tasks.multiclass import MulticlassTask
from kiln.tasks.multihead import MultiheadTask, heads_of
from kiln.tasks.multilabel import MultilabelTask, tuned_thresholds
from kiln.tasks.regression import RegressionTask
from kiln.tasks.segmentation import SegmentationTask

__all__ = ["TASKS", "Metrics", "MulticlassTask", "MultilabelTask", "Prediction", "RegressionTask", "Task", "build_task",
           "class_weights", "resolve_task_settings", "task_class", "task_for_training", "tuned_thresholds"]

log = logging.getLogger("kiln")

TASKS: dict[str, type[Task]] = {"multiclass": MulticlassTask, "multilabel": MultilabelTask,
                                "regression": RegressionTask, "multihead": MultiheadTask,
                                "segmentation": SegmentationTask, "detection": DetectionTask}


def task_class(name: str) -> type[Task]:
    """The class of task `name`: one of kiln's, or your own `package.module:Class` (a subclass of Task, checked)."""
    if not names_code(name):
        if name not in TASKS:
            raise KilnError(f"unknown task {name!r}: kiln's tasks are {', '.join(TASKS)}, or a task of your own as "
                            "package.module:Class")
        return TASKS[name]
    from kiln.core.user_code import resolve

    return resolve("task.name", name, Task, functions=False)


def build_task(cfg: TaskConfig, num_classes: int | None, weights: torch.Tensor | None = None) -> Task:
    """The task of `cfg`; `weights`: class weights (multiclass) or positive weights (multilabel) for the loss."""
    if isinstance(cfg, OwnTaskConfig):
        return _own_task(cfg, num_classes)
    if isinstance(cfg, MulticlassTaskConfig):
        return MulticlassTask(cfg, num_classes, weights)
    if isinstance(cfg, MultilabelTaskConfig):
        return MultilabelTask(cfg, num_classes, weights)
    if isinstance(cfg, MultiheadTaskConfig):
        return MultiheadTask(cfg, num_classes)
    if isinstance(cfg, SegmentationTaskConfig):
        return SegmentationTask(cfg, num_classes)
    if isinstance(cfg, DetectionTaskConfig):
        return DetectionTask(cfg, num_classes)
    return RegressionTask(cfg, num_classes)


def _own_task(cfg: OwnTaskConfig, num_classes: int | None) -> Task:
    """Your task: `Class(cfg, num_classes, **task.args)`; its arguments are checked by the preflight, and what it
    declares (its metrics and their directions) here."""
    cls = task_class(cfg.name)
    try:
        task = cls(cfg, num_classes, **cfg.args)
    except TypeError as e:
        raise KilnError(f"task.name={cfg.name}: cannot build it with task.args {cfg.args}: {e}") from None
    task.name = cfg.name  # what its predictions and test results are filed under
    check_declared(task)
    return task


def check_declared(task: Task) -> None:
    """A task's metric names are unique and each has a direction kiln can tell (Task.directions, or a name such
    as loss, mae, acc or f1)."""
    if task.num_classes is None:
        return
    names = task.val_metrics()
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise KilnError(f"task {task.name}: val_metrics() names {', '.join(twice)} more than once")
    unknown = [n for n in names if n not in task.directions and known_direction(n) is None]
    if unknown:
        raise KilnError(f"task {task.name}: say whether {', '.join(unknown)} improve up or down — set "
                        f"directions = {{{', '.join(repr(n) + ': ' + repr('min') for n in unknown)}}} (or 'max') on the "
                        "class")


# Every target of the training split, read when a setting needs them (kiln.data.loaders.split_targets).
Targets = Callable[[], torch.Tensor]


def task_for_training(cfg: TaskConfig, train_targets: Targets, num_classes: int) -> Task:
    """The task with what it learns from the training split: class weights, positive weights, target scaling."""
    if isinstance(cfg, OwnTaskConfig):
        return build_task(cfg, num_classes)
    cfg = resolve_task_settings(cfg, train_targets)
    weights = class_weights(cfg, train_targets, num_classes) if isinstance(cfg, MulticlassTaskConfig) else \
        pos_weight(cfg, train_targets, num_classes) if isinstance(cfg, MultilabelTaskConfig) else None
    return build_task(cfg, num_classes, weights)


def resolve_task_settings(cfg: TaskConfig, train_targets: Targets, info: Any = None) -> TaskConfig:
    """`cfg` with what the task learns from the training split before training (the run's config.yaml records it,
    so test/predict/export use the same). Regression: the targets' mean and standard deviation. Multihead: the
    label columns and each one's class count, from the output names (column=value of `info`, the DataInfo).
    Detection: the dataset's category ids of the outputs."""
    if isinstance(cfg, MultiheadTaskConfig) and cfg.heads is None and info is not None and info.class_names:
        heads = heads_of(info.class_names)
        return cfg.with_values({"columns": [c for c, _ in heads], "heads": [len(v) for _, v in heads]})
    if isinstance(cfg, DetectionTaskConfig) and cfg.category_ids is None and info is not None and info.output_ids:
        return cfg.with_values({"category_ids": list(info.output_ids)})
    if not isinstance(cfg, RegressionTaskConfig) or not cfg.standardize or cfg.target_mean is not None:
        return cfg
    y = to_columns(train_targets().double())
    mean = [round(float(v), 6) for v in y.mean(0)]
    std = [round(float(v), 6) if v > 1e-12 else 1.0 for v in y.std(0, correction=0)]
    log.info("regression targets standardised with the training split's mean %s and std %s", mean, std)
    return cfg.with_values({"target_mean": mean, "target_std": std})


def class_weights(cfg: MulticlassTaskConfig, train_targets: Targets, num_classes: int) -> torch.Tensor | None:
    """task.class_weights as a tensor: given (one per class), or auto = n / (k x count) on the training split."""
    if cfg.class_weights is None or isinstance(cfg.class_weights, list):
        return _given("task.class_weights", cfg.class_weights, num_classes, "class")
    labels = train_targets()
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    weights = len(labels) / (num_classes * counts.clamp_min(1))
    log.info("task.class_weights=auto: %s", ", ".join(f"{w:.3g}" for w in weights.tolist()))
    return weights


def pos_weight(cfg: MultilabelTaskConfig, train_targets: Targets, num_labels: int) -> torch.Tensor | None:
    """task.pos_weight as a tensor: given (one per label), or auto = negatives / positives per label on the
    training split (a label never present gets 1)."""
    if cfg.pos_weight is None or isinstance(cfg.pos_weight, list):
        return _given("task.pos_weight", cfg.pos_weight, num_labels, "label")
    y = train_targets().float()
    positives = y.sum(0)
    weights = torch.where(positives > 0, (len(y) - positives) / positives.clamp_min(1), torch.ones_like(positives))
    log.info("task.pos_weight=auto: %s", ", ".join(f"{w:.3g}" for w in weights.tolist()))
    return weights



def _given(key: str, values: list[float] | None, count: int, what: str) -> torch.Tensor | None:
    """Weights written in the config: one per class (or label), checked against the data."""
    if values is None:
        return None
    if len(values) != count:
        plural = {"class": "classes", "label": "labels"}[what]
        raise KilnError(f"{key} has {len(values)} values for {count} {plural}; give one per {what}, in label order "
                        "(or auto)")
    return torch.tensor(values, dtype=torch.float32)
