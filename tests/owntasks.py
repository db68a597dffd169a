"""Tasks of a user's own for the tests (`task.name: owntasks:Name`): one that learns, and each kind of mistake."""

from typing import ClassVar

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
