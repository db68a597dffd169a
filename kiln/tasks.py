"""The task: what depends on the kind of problem — the head's output size, the training loss, the metrics and
the names they are logged under, and how outputs become predictions. The loop never names a loss.

Today's task is single-label classification (`multiclass`); others slot in behind the same methods.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from kiln.config import TaskConfig
from kiln.errors import KilnError

log = logging.getLogger("kiln")


class MulticlassTask:
    """One label per sample out of `num_classes`: cross-entropy, accuracy, top-5 accuracy and macro F1.

    The reported loss (`train/loss`, `val/loss`, the test loss) is plain cross-entropy everywhere, so training
    and validation curves compare like with like; with label smoothing the smoothed objective that is
    optimised is logged on its own as `train/objective`.
    """

    name = "multiclass"
    default_monitor = ("val/acc", "max")

    def __init__(self, cfg: TaskConfig, num_classes: int | None, class_weights: torch.Tensor | None = None):
        self.cfg, self.num_classes, self.class_weights = cfg, num_classes, class_weights
        self.own_loss = None
        if cfg.loss is not None:
            from kiln.user_code import resolve

            self.own_loss = resolve("task.loss", cfg.loss, None, functions=True)

    @property
    def smoothed(self) -> bool:
        """Whether the objective differs from the reported loss (and is logged as train/objective)."""
        return self.cfg.label_smoothing > 0 or self.own_loss is not None or self.class_weights is not None

    def logits(self, outputs: Any) -> torch.Tensor:
        """The model's class scores (B, C) from what its forward returned: a tensor (logits, or
        log-probabilities, which cross-entropy treats the same), a tuple whose first element they are, or a dict
        with a `logits` entry (as Hugging Face models return)."""
        if isinstance(outputs, torch.Tensor):
            return outputs
        if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
            return outputs[0]
        if isinstance(outputs, dict) and isinstance(outputs.get("logits"), torch.Tensor):
            return outputs["logits"]
        got = type(outputs).__name__ + (f" with keys {sorted(outputs)}" if isinstance(outputs, dict) else "")
        raise KilnError(f"the model's forward returned {got}; kiln takes a tensor of class scores (B, C), a tuple "
                        "whose first element is that tensor, or a dict with a 'logits' tensor")

    def output_size(self, num_classes: int) -> int:
        """The model's head size for this many classes."""
        return num_classes

    def objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss that training minimises (label-smoothed, or task.loss, when configured). outputs: (B, C)."""
        if self.own_loss is not None:
            loss = self.own_loss(outputs, targets)
            if not (isinstance(loss, torch.Tensor) and loss.ndim == 0):
                raise KilnError(f"task.loss={self.cfg.loss} returned {type(loss).__name__}"
                                f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}; it must return "
                                "a scalar tensor (reduce over the batch, e.g. with .mean())")
            return loss
        if self.class_weights is not None and self.class_weights.device != outputs.device:
            self.class_weights = self.class_weights.to(outputs.device)
        return F.cross_entropy(outputs, targets, weight=self.class_weights, label_smoothing=self.cfg.label_smoothing)

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The reported loss, summed over the batch: plain cross-entropy in fp32."""
        return F.cross_entropy(outputs.float(), targets, reduction="sum")

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many samples of the batch are right (a device scalar): the running training accuracy."""
        return (outputs.argmax(1) == targets).sum()

    def metrics(self, device: torch.device, detailed: bool = False) -> MetricCollection:
        """Accuracy, top-5 accuracy (more than 5 classes), macro F1; per class and the confusion matrix on request."""
        n = self.num_classes
        assert n is not None, "the number of classes is known once the data is loaded"
        metrics: dict[str, Any] = {
            "acc": MulticlassAccuracy(n, average="micro", validate_args=False),
            "f1": MulticlassF1Score(n, average="macro", validate_args=False),
        }
        if n > 5:
            metrics["acc_top5"] = MulticlassAccuracy(n, top_k=5, average="micro", validate_args=False)
        if detailed:
            metrics["per_class_acc"] = MulticlassAccuracy(n, average="none", validate_args=False)
            metrics["confusion_matrix"] = MulticlassConfusionMatrix(n, validate_args=False)
        return MetricCollection(metrics).to(device)

    def metric_names(self, has_val: bool) -> list[str] | None:
        """Every metric an epoch produces (what early stopping and checkpointing may monitor); None while the
        number of classes is not known yet."""
        if self.num_classes is None:
            return None
        names = ["train/loss", "train/acc", "lr"] + (["train/objective"] if self.smoothed else [])
        if has_val:
            names += ["val/loss", "val/acc", "val/f1"] + (["val/acc_top5"] if self.num_classes > 5 else [])
        return names

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> per-class probabilities (B, C)."""
        return outputs.float().softmax(-1)


TASKS = {"multiclass": MulticlassTask}


def build_task(cfg: TaskConfig, num_classes: int | None, class_weights: torch.Tensor | None = None) -> MulticlassTask:
    return TASKS[cfg.name](cfg, num_classes, class_weights)


def class_weights(cfg: TaskConfig, train_batches, num_classes: int) -> torch.Tensor | None:
    """task.class_weights as a tensor: given (one per class), or auto = n / (k x count) on the training split."""
    if cfg.class_weights is None:
        return None
    if isinstance(cfg.class_weights, list):
        if len(cfg.class_weights) != num_classes:
            raise KilnError(f"task.class_weights has {len(cfg.class_weights)} values for {num_classes} classes; give "
                            "one per class, in label order (or auto)")
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    from kiln.data.loaders import split_labels

    labels = split_labels(train_batches)
    if labels is None:  # your own Dataset: read its labels once
        labels = torch.cat([y.cpu() for _, y in train_batches.epoch(0)])
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    weights = len(labels) / (num_classes * counts.clamp_min(1))
    log.info("task.class_weights=auto: %s", ", ".join(f"{w:.3g}" for w in weights.tolist()))
    return weights
