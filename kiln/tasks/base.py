"""What every task shares: reading the model's output, a training objective of the user's own (`task.loss:
pkg.mod:fn`), and the names of the metrics an epoch logs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from kiln.config import TaskConfig
from kiln.core.errors import KilnError
from kiln.core.user_code import names_code
from kiln.tasks.answering import Answering, Prediction
from kiln.tasks.data_side import TargetsSide

__all__ = ["Answering", "Metrics", "Prediction", "TargetsSide", "Task", "call_model", "known_direction", "to_columns",
           "weighted_mean"]


class Task(TargetsSide, Answering):
    """What a kind of problem is to kiln — the one interface the loop, evaluation, predict, cv, tune and the report
    use (the loop never names a loss). kiln's tasks (multiclass, multilabel, regression) implement it, and so does
    a task of your own (`task.name: package.module:Class`, built as `Class(cfg, num_classes, **task.args)`).

    A task of your own implements, at least:
      task_objective(outputs, targets)  the mean loss training minimises (a scalar tensor)
      metrics(device, detailed)         the validation/test metrics (a `Metrics` of torchmetrics collections)
      val_metrics()                     their names (val/<name> in the logs; what trainer.checkpoint.monitor names)
    and sets `directions` ({metric: "min" | "max"}) for metrics whose direction kiln cannot tell from the name,
    `train_metric` + train_score_sum (or train_metric = None) and `headline` (the metric the epoch line shows).
    The rest has defaults made for one class index per sample — targets read from class folders, CSV cells or a
    dataset's labels, stratified splits, softmax probabilities as predictions, top-k prediction rows — which a task
    overrides where its targets or outputs differ. Task settings come from `task.args`, as keyword arguments of
    its constructor. `outputs` are what the model returns (through `logits`); `targets` what the data gives.

    The protocol is in three parts: training and evaluation (here), what the data side asks (`TargetsSide`), and
    predictions and exported graphs (`Answering`).
    """

    name = ""
    train_metric: str | None = "acc"  # the running training metric, logged as train/<name> (None: none)
    headline: str | None = "acc"  # the validation metric the epoch line shows (None: the loss alone)
    summary_metrics: tuple[str, ...] = ()  # the scalar test results, in the order tables show them
    directions: ClassVar[dict[str, str]] = {}  # metric -> "min" | "max", where the name does not tell
    eval_loss = True  # evaluation measures the loss (a detector returns detections there, not losses)
    mixes = False  # MixUp/CutMix may blend two samples' targets (soft_targets gives the form they blend in)
    pixel_outputs = False  # the outputs are per pixel of the input (test-time flips are undone before averaging)

    def __init__(self, cfg: TaskConfig, num_classes: int | None):
        self.cfg, self.num_classes = cfg, num_classes
        self.own_loss = None
        if cfg.loss is not None and names_code(cfg.loss):
            from kiln.core.user_code import resolve

            self.own_loss = resolve("task.loss", cfg.loss, None, functions=True)

    @property
    def smoothed(self) -> bool:
        """Whether the objective differs from the reported loss (and is logged as train/objective)."""
        return self.own_loss is not None

    def outputs(self, model: Any, inputs: Any, targets: Any = None) -> Any:
        """How the model is called on a batch — training passes the batch's `targets` (for a model that needs them
        in training, as torchvision's detectors do), evaluation and prediction do not — and what of its return
        the loss and metrics take (`logits`). Default: `model(inputs)` (a tuple as positional arguments, a dict as
        keywords), through `logits`."""
        return self.logits(call_model(model, inputs))

    def logits(self, outputs: Any) -> torch.Tensor:
        """The model's scores (B, C) from what its forward returned: a tensor (logits, or log-probabilities, which
        cross-entropy treats the same), a tuple whose first element they are, or a dict with a `logits` entry
        (as Hugging Face models return)."""
        if isinstance(outputs, torch.Tensor):
            return outputs
        if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
            return outputs[0]
        if isinstance(outputs, dict) and isinstance(outputs.get("logits"), torch.Tensor):
            return outputs["logits"]
        got = type(outputs).__name__ + (f" with keys {sorted(outputs)}" if isinstance(outputs, dict) else "")
        raise KilnError(f"the model's forward returned {got}; kiln takes a tensor of scores (B, C), a tuple "
                        "whose first element is that tensor, or a dict with a 'logits' tensor")

    def objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss that training minimises: task.loss of your own when configured, else the task's."""
        if self.own_loss is None:
            return _scalar(self.task_objective(outputs, targets), f"task {self.name}: task_objective")
        return _scalar(self.own_loss(outputs, targets), f"task.loss={self.cfg.loss}")

    def task_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task's own training loss: the mean over the batch, a scalar tensor."""
        raise NotImplementedError

    def average(self, outputs: list[Any], weights: list[float]) -> Any:
        """Several answers to the same inputs (test-time views, an ensemble's models) as one, in the form of one
        model's outputs: the default averages the predicted probabilities and answers their log, whose softmax
        is that average (so the loss and metrics score the averaged prediction)."""
        mean = weighted_mean([self.predictions(o) for o in outputs], weights)
        return mean.clamp_min(torch.finfo(torch.float32).tiny).log()

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """The distance of the student's outputs to the teacher's (task.distill), both softened by the
        temperature, times its square (so the gradients keep their size as the temperature changes)."""
        raise KilnError(f"task {self.name} does not learn from a teacher (task.distill)")

    def soft_targets(self, targets: Any) -> torch.Tensor:
        """A batch's targets as rows that can be blended (MixUp, CutMix): one-hot class rows, label sets as 0/1.
        The objective and `train_score_sum` then take blended rows as well as the data's own targets. A task
        that sets `mixes = True` implements it."""
        raise KilnError(f"task {self.name} does not mix targets (data.augment.mixup/cutmix)")

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The reported loss, summed over the batch, in fp32 (default: the objective times the batch's samples)."""
        return self.task_objective(outputs.float(), targets).float() * len(targets)

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The running training metric (`train_metric`) summed over the batch's samples, as a device scalar."""
        raise NotImplementedError

    def metric_names(self, has_val: bool) -> list[str] | None:
        """Every metric an epoch produces (what early stopping and checkpointing may monitor); None while the
        number of classes is not known yet."""
        if self.num_classes is None:
            return None
        names = ["train/loss", *([f"train/{self.train_metric}"] if self.train_metric else []), "lr"] + \
            (["train/objective"] if self.smoothed else [])
        return names + ([f"val/{m}" for m in ["loss", *self.val_metrics()]] if has_val else [])

    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        """The validation/test metrics, fed with the model's raw outputs (`detailed`: per class or label too)."""
        raise NotImplementedError

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> what a prediction is: probabilities (B, C) (the default: softmax of class scores), or
        values in the targets' units (B, k)."""
        return outputs.float().softmax(-1)

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """test_metrics.json's content from `evaluate(..., detailed=True)`'s results (default: the loss, every
        metric `metrics()` computed, the sample count and the output names)."""
        return {**raw, "class_names": names}

    @classmethod
    def better(cls, metric: str) -> str:
        """"min" or "max": which way `metric` (e.g. val/mae_class) improves — `directions`, else by its name (min for
        losses and errors, max for accuracies and scores; a name kiln does not know: max)."""
        name = metric.rsplit("/", 1)[-1]
        return cls.directions.get(name) or known_direction(name) or "max"

    def check_computed(self, computed: Mapping[str, Any]) -> None:
        """Refuse results that lack a metric `val_metrics()` names (a task of your own whose metrics() and
        val_metrics() disagree), naming it and what was computed."""
        missing = [m for m in self.val_metrics() if m not in computed]
        if missing:
            raise KilnError(f"task {self.name}: val_metrics() names {', '.join(missing)} but metrics() computed "
                            f"{', '.join(sorted(computed)) or 'nothing'}; make them agree")

    def val_metrics(self) -> list[str]:
        """The names (without val/) of the scalar metrics `metrics()` computes."""
        raise NotImplementedError

    def check_message(self) -> str:
        """What the loss needs, for the message when a user's batch does not fit it."""
        return f"Check the targets task {self.name} takes and the outputs its loss expects"

    def check_targets(self, class_names: list[str], train_targets: torch.Tensor | None, where: str) -> None:
        """Refuse, before training, data this task cannot learn from (e.g. a single class). `train_targets`: the
        training split's targets when the source knows them without reading its inputs, else None."""

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> float:
        """The headline metric of `predictions()` (e.g. a k-fold ensemble's averaged ones) against the targets."""
        raise KilnError(f"task {self.name} does not score averaged predictions (Task.score): kiln cv --test "
                        "needs it")

    @classmethod
    def scores_averages(cls) -> bool:
        """Whether the task implements `score` (what kiln cv --test checks before training any fold)."""
        return cls.score is not Task.score

    # -- after training, and a classical baseline
    def after_fit_settings(self, probabilities: torch.Tensor, targets: torch.Tensor) -> dict[str, Any] | None:
        """The task's post-training step, on the best checkpoint's validation predictions: settings to record in
        the run's config (None: the task has none; `wants_validation_predictions` says whether to run it)."""
        return None

    def wants_validation_predictions(self) -> bool:
        return False

    @classmethod
    def baseline(cls, strength: float) -> tuple[Any, str]:
        """(scikit-learn estimator, its name) of the classical model `kiln baseline` fits for this task;
        `strength`: the inverse regularisation its linear model gets on these inputs (scikit-learn's C)."""
        raise KilnError(f"kiln baseline has no classical model for task {cls.name or 'of yours'} (Task.baseline): it "
                        "fits one for an answer per sample — multiclass, multilabel, regression")

    @classmethod
    def baseline_scores(cls, truth: Any, predicted: Any) -> dict[str, float]:
        """The baseline's headline metrics, named as in test_metrics.json."""
        raise KilnError(f"kiln baseline has no scores for task {cls.name} (Task.baseline_scores)")

    @classmethod
    def describe(cls, results: Mapping[str, Any]) -> str:
        """One line of test results: `loss 0.31 | acc 0.91 | ...`."""
        keys = cls.summary_metrics or [k for k, v in results.items() if isinstance(v, float)]  # a task of yours
        return " | ".join(f"{cls.LABELS.get(k, k)} {results[k]:{'.4g' if k in ('mae', 'rmse') else '.4f'}}"
                          for k in keys if isinstance(results.get(k), (int, float)))

    # What commonly makes a model collapse onto a constant answer, for the warning (see `collapse_warning`).
    COLLAPSE_CAUSES = ""

    @classmethod
    def collapsed(cls, metrics: Mapping[str, float]) -> str | None:
        """What shows that the model gave up on its inputs at this epoch (e.g. one class for every validation
        sample), or None: it did not, or this task cannot tell."""
        return None

    @classmethod
    def collapse_warning(cls, rows: Sequence[Mapping[str, float]], patience: int = 3) -> str | None:
        """The warning for the first `patience` epochs in a row that `collapsed` at (None: no such streak):
        what training shows, the epochs, and the likely causes. The training log and the report both say it."""
        streak = 0
        for row in rows:
            what = cls.collapsed(row)
            streak = streak + 1 if what else 0
            if streak == patience:
                epoch = int(row.get("epoch", 0))
                when = f"at epochs {epoch - patience + 1}-{epoch}" if epoch else f"for {patience} epochs in a row"
                return (f"the model has collapsed onto a constant answer: {what} {when}, while it trains on. "
                        f"Likely causes: {cls.COLLAPSE_CAUSES}")
        return None

    @classmethod
    def weakest(cls, results: Mapping[str, Any]) -> str | None:
        """The hardest classes or labels of a test, for `kiln test`'s last line (None: nothing to say)."""
        return None

    LABELS: ClassVar[dict[str, str]] = {
        "acc": "accuracy", "acc_top5": "top-5", "f1": "macro F1", "f1_micro": "F1 micro", "f1_macro": "F1 macro",
        "map": "mAP", "mae": "MAE", "rmse": "RMSE", "r2": "R²"}


# Metric names (or their first word: mae_class, acc_all) whose direction kiln knows.
LOWER_IS_BETTER = ("loss", "objective", "mae", "rmse", "mse", "error", "err")
HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "map", "r2", "auroc", "auc", "precision", "recall", "iou", "miou", "dice",
                    "top")


def known_direction(name: str) -> str | None:
    """"min" or "max" for a metric name kiln can read (its first word decides: mae_class -> min), else None."""
    first = name.split("_", 1)[0]
    for word in (name, first):
        if word in LOWER_IS_BETTER:
            return "min"
        if word in HIGHER_IS_BETTER:
            return "max"
    return None


def call_model(model: Any, inputs: Any) -> Any:
    """The model on a batch's inputs: a tensor (or TextBatch), a tuple (positional arguments) or a dict (keyword
    arguments), as a user's Dataset may return them."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _scalar(loss: Any, what: str) -> torch.Tensor:
    """`loss` if it is a scalar tensor, else the KilnError that says what it is and how to make it one."""
    if not (isinstance(loss, torch.Tensor) and loss.ndim == 0):
        raise KilnError(f"{what} returned {type(loss).__name__}"
                        f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}; it must return "
                        "a scalar tensor (reduce over the batch, e.g. with .mean())")
    return loss


def to_columns(targets: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1); (B, k) stays: the shape the model's outputs have."""
    return targets.unsqueeze(1) if targets.ndim == 1 else targets


class Metrics:
    """torchmetrics collections fed from the model's raw outputs: each gets what its `prepare` makes of them
    (probabilities, thresholded labels, values in original units). Ranks are synced by torchmetrics in compute()."""

    def __init__(self, *groups: tuple[Any, Any]):
        self.groups = groups

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        for collection, prepare in self.groups:
            collection.update(*prepare(outputs, targets))

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for collection, _ in self.groups:
            out.update(collection.compute())
        return out


def weighted_mean(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum(w_i * x_i) of same-shaped tensors, in fp32 (the weights sum to one)."""
    stacked = torch.stack([t.float() for t in tensors])
    return torch.tensordot(torch.tensor(weights, dtype=torch.float32, device=stacked.device), stacked, dims=1)
