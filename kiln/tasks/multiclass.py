"""Single-label classification: one class out of `num_classes` per sample."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from kiln.config import MulticlassTaskConfig
from kiln.core.errors import KilnError
from kiln.tasks.base import Metrics, Task

# The share of validation predictions on one class from which the model is taken to have collapsed onto it.
COLLAPSED_SHARE = 0.95


def top_class_share(num_classes: int) -> Any:
    """The share of predictions that go to the most-predicted class (1.0: one class for every input); counts are
    summed over DDP ranks like every torchmetrics state."""
    from torchmetrics import Metric

    class _TopClassShare(Metric):
        full_state_update = False
        counts: torch.Tensor  # (C,) predictions per class

        def __init__(self) -> None:
            super().__init__()
            self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

        def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
            self.counts += torch.bincount(outputs.argmax(1), minlength=num_classes)

        def compute(self) -> torch.Tensor:
            return self.counts.max().float() / self.counts.sum().clamp_min(1)

    return _TopClassShare()


class MulticlassTask(Task):
    """Cross-entropy; accuracy, top-5 accuracy and macro F1.

    The reported loss (`train/loss`, `val/loss`, the test loss) is plain cross-entropy everywhere, so training
    and validation curves compare like with like; with label smoothing, class weights or a loss of your own, the
    objective that is optimised is logged on its own as `train/objective`.
    """

    name = "multiclass"
    summary_metrics = ("loss", "acc", "acc_top5", "f1")
    report_view = "confusion"
    output_doc = "logits (batch, classes); softmax gives probabilities"
    mixes = True

    def __init__(self, cfg: MulticlassTaskConfig, num_classes: int | None, class_weights: torch.Tensor | None = None):
        super().__init__(cfg, num_classes)
        self.cfg: MulticlassTaskConfig = cfg
        self.class_weights = class_weights

    @property
    def smoothed(self) -> bool:
        return self.cfg.label_smoothing > 0 or self.own_loss is not None or self.class_weights is not None or \
            self.cfg.distill is not None

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """KL(teacher || student) of the class distributions softened by the temperature, times its square."""
        return F.kl_div(F.log_softmax(outputs / temperature, 1), F.log_softmax(teacher / temperature, 1),
                        reduction="batchmean", log_target=True) * temperature ** 2

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

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Class indices as one-hot rows (B, C), which MixUp/CutMix blend; cross-entropy takes either form."""
        assert self.num_classes is not None, "known once the data is loaded"
        return F.one_hot(targets.long(), self.num_classes).float()

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many samples of the batch are right: the running training accuracy. Against blended targets
        (MixUp/CutMix) a prediction counts by the weight its class has in the blend: 0.7 for the class that makes
        up 70 % of the image, so the figure stays an honest accuracy against what the model was shown."""
        predicted = outputs.argmax(1)
        if targets.ndim == 2:
            return targets.gather(1, predicted[:, None]).sum()
        return (predicted == targets).sum()

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
        metrics["top_class_share"] = top_class_share(n)
        if detailed:
            metrics["per_class_acc"] = MulticlassAccuracy(n, average="none", validate_args=False)
            metrics["confusion_matrix"] = MulticlassConfusionMatrix(n, validate_args=False)
        return Metrics((MetricCollection(metrics).to(device), lambda o, t: (o, t)))

    def val_metrics(self) -> list[str]:
        return ["acc", "f1"] + (["acc_top5"] if (self.num_classes or 0) > 5 else []) + ["top_class_share"]

    @classmethod
    def collapsed(cls, metrics: Mapping[str, float]) -> str | None:
        """Validation predictions (nearly) all of one class: the model answers a constant, whatever the input."""
        share = metrics.get("val/top_class_share")
        if share is None or share < COLLAPSED_SHARE:
            return None
        acc = metrics.get("val/acc")
        return (f"{share:.0%} of the validation predictions are one class"
                + (f" (val/acc {acc:.4f}: that class's share of the validation split)" if acc is not None else ""))

    COLLAPSE_CAUSES = (
        "an input too small for the model's downsampling (a 32× network such as mobilenet_v3 or resnet turns "
        "32 px into 1 px: raise data.image_size, or pick a model made for small images), a learning rate too high "
        "or too low (kiln lr-find CONFIG), BatchNorm frozen with the backbone (model.freeze), or one class "
        "dominating the training split (task.class_weights=auto or data.sampler=weighted)")

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
    def weakest(cls, results: Mapping[str, Any]) -> str | None:
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

    @classmethod
    def checked_batch(cls, targets: torch.Tensor, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> torch.Tensor:
        if targets.ndim != 1 or targets.dtype.is_floating_point:
            raise KilnError(f"{shape}; the multiclass task needs one integer class index per sample")
        bad = ((targets < 0) | (targets >= num_classes)).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise KilnError(f"{split} sample {sample(i)} has label {int(targets[i])}, outside 0..{num_classes - 1}")
        return targets.long()

    # -- baseline
    @classmethod
    def baseline(cls, strength: float) -> tuple[Any, str]:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000, C=strength), "logistic regression"

    @classmethod
    def baseline_scores(cls, truth: Any, predicted: Any) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        return {"acc": float(accuracy_score(truth, predicted)), "f1": float(f1_score(truth, predicted, average="macro"))}
