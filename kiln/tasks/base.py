"""What every task shares: reading the model's output, a training objective of the user's own (`task.loss:
pkg.mod:fn`), and the names of the metrics an epoch logs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from kiln.config import TaskConfig
from kiln.core.errors import KilnError
from kiln.core.user_code import names_code


@dataclass
class Prediction:
    """One input's prediction, as `kiln predict` prints or writes it."""

    input: str
    label: str  # the class; the labels predicted, `a|b` (multilabel); the values, `name value ...` (regression)
    probability: float | None  # the class's probability (multiclass only)
    top: list[tuple[str, float]]  # the top-k (class, probability), best first; every label's probability, best
    # first (multilabel); (target, value) of every target (regression)
    kind: str = "multiclass"  # the task


class Task:
    """The interface the loop, evaluation, predict, cv and the report use; the loop never names a loss.

    Subclasses set `name`, `train_metric` (the running training metric, logged as train/<name>), `headline` (the
    validation metric the epoch line shows) and implement the loss and metrics. The metric best.pt is kept by
    when the config does not say is the headline on validation (its config section's `default_monitor`, which the
    run plan fills in).
    """

    name = ""
    train_metric = "acc"
    headline = "acc"
    summary_metrics: tuple[str, ...] = ()  # the scalar test results, in the order tables show them

    # What the data side asks of a task (known from task.name alone, before any model exists: class attributes and
    # class methods). The data code never names a task.
    noun = "classes"  # what the model's outputs are called: classes | labels | targets
    several_columns = False  # a file may give one target per column (regression)
    empty_label_ok = False  # a sample may have no target at all (multilabel: no label)
    class_per_sample = True  # one class per sample: a class folder, a registered dataset's label can serve it
    file_hint = "classes"  # what a CSV row gives for this task, for messages
    default_count: int | None = None  # the output count of your own Dataset that does not say (regression: 1)
    exported: tuple[str, ...] = ()  # task settings an export's metadata carries
    output_doc = ""  # what an exported model's output is, for its metadata

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
            return self.task_objective(outputs, targets)
        loss = self.own_loss(outputs, targets)
        if not (isinstance(loss, torch.Tensor) and loss.ndim == 0):
            raise KilnError(f"task.loss={self.cfg.loss} returned {type(loss).__name__}"
                            f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}; it must return "
                            "a scalar tensor (reduce over the batch, e.g. with .mean())")
        return loss

    def task_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The reported loss, summed over the batch, in fp32."""
        raise NotImplementedError

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The running training metric (`train_metric`) summed over the batch's samples, as a device scalar."""
        raise NotImplementedError

    def metric_names(self, has_val: bool) -> list[str] | None:
        """Every metric an epoch produces (what early stopping and checkpointing may monitor); None while the
        number of classes is not known yet."""
        if self.num_classes is None:
            return None
        names = ["train/loss", f"train/{self.train_metric}", "lr"] + (["train/objective"] if self.smoothed else [])
        return names + ([f"val/{m}" for m in ["loss", *self.val_metrics()]] if has_val else [])

    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        """The validation/test metrics, fed with the model's raw outputs (`detailed`: per class or label too)."""
        raise NotImplementedError

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> what a prediction is: probabilities (B, C), or values in the targets' units (B, k)."""
        raise NotImplementedError

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """test_metrics.json's content from `evaluate(..., detailed=True)`'s results."""
        raise NotImplementedError

    def val_metrics(self) -> list[str]:
        """The names (without val/) of the scalar metrics `metrics()` computes."""
        raise NotImplementedError

    def check_message(self) -> str:
        """What the loss needs, for the message when a user's batch does not fit it."""
        raise NotImplementedError

    def check_targets(self, class_names: list[str], train_targets: torch.Tensor | None, where: str) -> None:
        """Refuse, before training, data this task cannot learn from (e.g. a single class). `train_targets`: the
        training split's targets when the source knows them without reading its inputs, else None."""

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> float:
        """The headline metric of `predictions()` (e.g. a k-fold ensemble's averaged ones) against the targets."""
        raise NotImplementedError

    # -- targets as files, splits and datasets give them
    @classmethod
    def parse_cells(cls, cells: Sequence[str], names: list[str], separator: str = "|", one_based: bool = False
                    ) -> tuple[Any, str]:
        """(target, "") or (None, what is wrong) for one row's label cells."""
        raise NotImplementedError

    @classmethod
    def target_names(cls, given: list[str] | None, raws: list[str], label_columns: list[str], separator: str,
                     where: Any) -> list[str]:
        """The output names: `given` (data.class_names, a dataset's own), else from the training file's cells."""
        raise NotImplementedError

    @classmethod
    def check_columns(cls, label_columns: list[str], key: str) -> None:
        if len(label_columns) > 1 and not cls.several_columns:
            raise KilnError(f"{key} lists {len(label_columns)} columns; several label columns are regression targets "
                            f"(task.name=regression), a {cls.name} task reads one")

    @classmethod
    def split_keys(cls, targets: torch.Tensor) -> torch.Tensor:
        """One integer per sample that a stratified validation/test split keeps in proportion."""
        raise NotImplementedError

    @classmethod
    def fold_keys(cls, targets: torch.Tensor, folds: int) -> torch.Tensor:
        """What k-fold cross-validation stratifies by (class indices (N,), or label sets (N, L))."""
        return cls.split_keys(targets)

    @classmethod
    def target_text(cls, y: torch.Tensor, names: list[str]) -> str:
        """One sample's target as a person reads it."""
        raise NotImplementedError

    @classmethod
    def split_summary(cls, targets: torch.Tensor, names: list[str]) -> str:
        """A split's targets in one line."""
        raise NotImplementedError

    @classmethod
    def default_names(cls, count: int) -> list[str]:
        """Output names for your own Dataset that has none."""
        return [str(i) for i in range(count)]

    @classmethod
    def checked_batch(cls, targets: torch.Tensor, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> torch.Tensor:
        """Your own Dataset's batch of targets as the loss needs them, or a KilnError saying what is wrong
        (`shape`: the batch described; `sample(i)`: the dataset index of its i-th sample)."""
        raise NotImplementedError

    # -- predictions as `kiln predict` gives them
    def answers(self, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
        """Each input's prediction from `predictions()` of its outputs."""
        raise NotImplementedError

    @classmethod
    def prediction_text(cls, r: Prediction) -> str:
        raise NotImplementedError

    @classmethod
    def prediction_json(cls, r: Prediction) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def csv_header(cls, first: Prediction | None) -> list[str]:
        raise NotImplementedError

    @classmethod
    def csv_row(cls, r: Prediction) -> list[str]:
        raise NotImplementedError

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
        raise NotImplementedError

    @classmethod
    def baseline_scores(cls, truth: Any, predicted: Any) -> dict[str, float]:
        """The baseline's headline metrics, named as in test_metrics.json."""
        raise NotImplementedError

    @classmethod
    def describe(cls, results: Mapping[str, Any]) -> str:
        """One line of test results: `loss 0.31 | acc 0.91 | ...`."""
        return " | ".join(f"{cls.LABELS.get(k, k)} {results[k]:{'.4g' if k in ('mae', 'rmse') else '.4f'}}"
                          for k in cls.summary_metrics if results.get(k) is not None)

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
