"""Tasks of a user's own for the tests (`task.name: owntasks:Name`): one that learns, and each kind of mistake."""

from typing import ClassVar

import torch
import torch.nn.functional as F

from kiln.tasks import Metrics, Task


class Hinge(Task):
    """Multiclass with a hinge loss (Crammer-Singer margin) and a metric whose name kiln cannot read."""

    train_metric = None  # no running training metric
    headline = "hits"
    directions: ClassVar[dict[str, str]] = {"hits": "max"}

    def __init__(self, cfg, num_classes, margin: float = 1.0):
        super().__init__(cfg, num_classes)
        self.margin = margin

    def task_objective(self, outputs, targets):
        right = outputs.gather(1, targets[:, None])
        others = outputs.scatter(1, targets[:, None], float("-inf"))
        return F.relu(self.margin - right + others.max(1, keepdim=True).values).mean()

    def metrics(self, device, detailed=False):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        return Metrics((MetricCollection({"hits": MulticlassAccuracy(self.num_classes, average="micro")}).to(device),
                        lambda o, t: (o, t)))

    def val_metrics(self):
        return ["hits"]


class NotScalar(Hinge):
    def task_objective(self, outputs, targets):
        return F.cross_entropy(outputs, targets, reduction="none")


class Unproduced(Hinge):
    def val_metrics(self):
        return ["hits", "recall_at_2"]


class NoDirection(Hinge):
    directions: ClassVar[dict[str, str]] = {}

    def metrics(self, device, detailed=False):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        return Metrics((MetricCollection({"spread": MulticlassAccuracy(self.num_classes)}).to(device),
                        lambda o, t: (o, t)))

    def val_metrics(self):
        return ["spread"]


class Twice(Hinge):
    def val_metrics(self):
        return ["hits", "hits"]


class NeedsLevels(Hinge):
    def __init__(self, cfg, num_classes, levels: int):
        super().__init__(cfg, num_classes)


class NotATask:
    pass


class Votes(Task):
    """Targets that are not tensors: each sample's annotator votes, a list of {"label", "weight"} of any length.
    Trains on the weighted vote distribution (soft cross-entropy); scored against the heaviest vote."""

    train_metric = "acc"
    headline = "acc"

    @classmethod
    def collate_targets(cls, targets):
        return list(targets)  # a list (one per sample) of lists of dicts: kept as they are

    def _soft(self, targets, like):
        soft = like.new_zeros(len(targets), self.num_classes)
        for i, votes in enumerate(targets):
            for vote in votes:
                soft[i, int(vote["label"])] += float(vote["weight"])
        return soft / soft.sum(1, keepdim=True)

    def majority(self, targets, device):
        import torch

        return torch.tensor([max(votes, key=lambda v: v["weight"])["label"] for votes in targets], device=device)

    def task_objective(self, outputs, targets):
        return -(self._soft(targets, outputs.float()) * outputs.float().log_softmax(1)).sum(1).mean()

    def train_score_sum(self, outputs, targets):
        return (outputs.argmax(1) == self.majority(targets, outputs.device)).sum()

    def metrics(self, device, detailed=False):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        return Metrics((MetricCollection({"acc": MulticlassAccuracy(self.num_classes, average="micro")}).to(device),
                        lambda o, t: (o, self.majority(t, o.device))))

    def val_metrics(self):
        return ["acc"]


class TargetsInTraining(Hinge):
    """Calls its model as torchvision's detectors are called: with the targets while training, without otherwise."""

    def outputs(self, model, inputs, targets=None):
        return self.logits(model(inputs, targets) if model.training else model(inputs))


class SeesTargets(torch.nn.Module):
    """A model that counts the batches it was given targets with (in training) and without (evaluation)."""

    calls: ClassVar[dict[str, int]] = {"with": 0, "without": 0}

    def __init__(self, num_classes: int, in_channels: int = 1, image_size=(28, 28)):
        super().__init__()
        self.fc = torch.nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def forward(self, x, targets=None):
        SeesTargets.calls["with" if targets is not None else "without"] += 1
        return self.fc(x.flatten(1))
