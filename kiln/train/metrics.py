"""Metrics accumulated on the device and read once per epoch (no per-batch host syncs)."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score


class RunningMean:
    """Sum of loss and correct predictions over an epoch, kept as device tensors; the sample count is kept on
    the host. Creating a device tensor from a Python number (the count) would be a blocking host-to-device
    copy on every step."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss * n, correct
        self.count = 0  # samples: a host int

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        n = targets.shape[0]
        correct = (logits.argmax(1) == targets).sum()
        self.sums += torch.stack([loss.detach().double() * n, correct.double()])
        self.count += n

    def compute(self, sync: bool = False) -> dict[str, float]:
        """Means over this rank's batches, or over every rank's with sync=True (all ranks must call it)."""
        from kiln.train import dist

        if sync and dist.current().distributed:
            loss_sum, correct, n = dist.all_reduce(torch.cat([self.sums, self.sums.new_tensor([self.count])])).tolist()
        else:
            (loss_sum, correct), n = self.sums.tolist(), self.count  # the one host sync
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": torch.cat([self.sums.cpu(), torch.tensor([float(self.count)], dtype=torch.float64)])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        sums = state["sums"].double()  # (loss * n, correct, n), as every checkpoint format stored it
        self.sums, self.count = sums[:2].to(self.device), int(sums[2].item())


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
