"""Metrics accumulated on the device and read once per epoch (no per-batch host syncs)."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score


class RunningMean:
    """Sum of loss and correct predictions over an epoch, kept as device tensors."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss * n, correct, n

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        n = targets.shape[0]
        correct = (logits.argmax(1) == targets).sum()
        self.sums += torch.stack([loss.detach().double() * n, correct.double(), self.sums.new_tensor(n)])

    def compute(self, sync: bool = False) -> dict[str, float]:
        """Means over this rank's batches, or over every rank's with sync=True (all ranks must call it)."""
        from kiln.train import dist

        sums = dist.all_reduce(self.sums.clone()) if sync else self.sums
        loss_sum, correct, n = sums.tolist()  # the one host sync
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = state["sums"].to(self.device)


def eval_metrics(num_classes: int, device: torch.device, detailed: bool = False) -> MetricCollection:
    """Accuracy, top-5 accuracy (when there are more than 5 classes), macro F1; per class on request."""
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
        "f1": MulticlassF1Score(num_classes, average="macro", validate_args=False),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", validate_args=False)
    if detailed:
        metrics["per_class_acc"] = MulticlassAccuracy(num_classes, average="none", validate_args=False)
        metrics["confusion_matrix"] = MulticlassConfusionMatrix(num_classes, validate_args=False)
    return MetricCollection(metrics).to(device)


def metric_names(num_classes: int, has_val: bool) -> list[str]:
    """Every metric an epoch produces: what early stopping and checkpointing may monitor."""
    names = ["train/loss", "train/acc", "lr"]
    if has_val:
        names += ["val/loss", "val/acc", "val/f1"] + (["val/acc_top5"] if num_classes > 5 else [])
    return names
