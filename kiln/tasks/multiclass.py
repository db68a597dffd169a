"""Single-label classification: one class out of `num_classes` per sample."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kiln.config import TaskConfig
from kiln.errors import KilnError
from kiln.tasks.base import Metrics, Task


class MulticlassTask(Task):
    """Cross-entropy; accuracy, top-5 accuracy and macro F1.

    The reported loss (`train/loss`, `val/loss`, the test loss) is plain cross-entropy everywhere, so training
    and validation curves compare like with like; with label smoothing, class weights or a loss of your own, the
    objective that is optimised is logged on its own as `train/objective`.
    """

    name = "multiclass"
    summary_metrics = ("loss", "acc", "acc_top5", "f1")

    def __init__(self, cfg: TaskConfig, num_classes: int | None, class_weights: torch.Tensor | None = None):
        super().__init__(cfg, num_classes)
        self.class_weights = class_weights

    @property
    def smoothed(self) -> bool:
        return self.cfg.label_smoothing > 0 or self.own_loss is not None or self.class_weights is not None

    def task_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.class_weights is None:
            return F.cross_entropy(outputs, targets, label_smoothing=self.cfg.label_smoothing)
        if self.class_weights.device != outputs.device:
            self.class_weights = self.class_weights.to(outputs.device)
        # Weighted losses averaged over the batch's samples — not divided by the batch's sum of weights, as torch's
        # mean is: that sum differs between DDP ranks, and the ranks' averaged gradients would then differ from
        # one process's over the global batch.
        per_sample = F.cross_entropy(outputs, targets, weight=self.class_weights,
                                     label_smoothing=self.cfg.label_smoothing, reduction="none")
        return per_sample.sum() / len(targets)

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, reduction="sum")

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many samples of the batch are right: the running training accuracy."""
        return (outputs.argmax(1) == targets).sum()

    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        """Accuracy, top-5 accuracy (more than 5 classes), macro F1; per class and the confusion matrix on request."""
        # torchmetrics costs seconds to import: only where metrics are computed
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

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
        return Metrics((MetricCollection(metrics).to(device), lambda o, t: (o, t)))

    def val_metrics(self) -> list[str]:
        return ["acc", "f1"] + (["acc_top5"] if (self.num_classes or 0) > 5 else [])

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> per-class probabilities (B, C)."""
        return outputs.float().softmax(-1)

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        return {"loss": raw["loss"], "acc": raw["acc"], "acc_top5": raw.get("acc_top5"), "f1": raw["f1"],
                "num_samples": int(sum(sum(row) for row in raw["confusion_matrix"])),
                # only the classes the scored data has: another folder may lack some of the run's classes
                "per_class_acc": {name: acc for name, acc, row in zip(names, raw["per_class_acc"],
                                                                      raw["confusion_matrix"]) if sum(row)},
                "class_names": names, "confusion_matrix": raw["confusion_matrix"]}

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> float:
        """Accuracy."""
        return float((predictions.argmax(1) == targets).float().mean())

    @classmethod
    def weakest(cls, results: dict[str, Any]) -> str | None:
        worst = sorted(results["per_class_acc"].items(), key=lambda kv: kv[1])[:3]
        return "hardest classes: " + ", ".join(f"{name} {acc:.3f}" for name, acc in worst)

    def check_targets(self, class_names: list[str], train_targets: torch.Tensor | None, where: str) -> None:
        """At least two classes, and at least two of them among the training samples (a folder whose other
        classes were all skipped as unreadable trains a constant)."""
        names = class_names or [str(i) for i in range(self.num_classes or 0)]
        present = names if train_targets is None else \
            [names[c] for c in sorted(set(train_targets.long().tolist())) if 0 <= c < len(names)]
        if len(names) < 2 or len(present) < 2:
            found = f"{len(present)} class among the training samples ({', '.join(present) or 'none'})" \
                if len(names) >= 2 else f"{len(names)} class ({', '.join(names) or 'none'})"
            raise KilnError(f"{where} has {found}; a classifier needs at least two classes to tell apart. Add images "
                            "(or rows) of another class, or check data.classes / data.class_names")

    def check_message(self) -> str:
        return f"The multiclass task needs one class index per sample and outputs (batch, {self.num_classes})"
