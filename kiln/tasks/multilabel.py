"""Multi-label classification: any number of `num_classes` labels per sample (targets are multi-hot (B, L))."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kiln.config import MultilabelTaskConfig
from kiln.core.errors import KilnError
from kiln.tasks.base import Metrics, Prediction, Task, weighted_mean


class MultilabelTask(Task):
    """Binary cross-entropy with logits per label (optionally `task.pos_weight`); a label is predicted when its
    probability reaches `task.threshold` (one value, or one per label — tuned on validation with
    task.tune_threshold). Metrics: label-wise accuracy, micro and macro F1, mAP (mean average precision over the
    labels that have positives); per label precision, recall, F1, AP and support on request."""

    name = "multilabel"
    headline = "f1_micro"
    summary_metrics = ("loss", "f1_micro", "f1_macro", "map", "acc")
    report_view = "per_label"
    noun = "labels"
    empty_label_ok = True
    class_per_sample = False
    file_hint = "label sets (e.g. cat|dog)"
    exported = ("threshold",)
    mixes = True
    output_doc = ("logits (batch, labels); sigmoid gives each label's probability; a label is predicted when it "
                  "reaches its threshold")

    def __init__(self, cfg: MultilabelTaskConfig, num_classes: int | None, pos_weight: torch.Tensor | None = None):
        super().__init__(cfg, num_classes)
        self.cfg: MultilabelTaskConfig = cfg
        self.pos_weight = pos_weight
        self._thresholds: torch.Tensor | None = None
        self._thresholds_of: tuple[list[float], torch.device] | None = None

    @property
    def smoothed(self) -> bool:
        return self.own_loss is not None or self.pos_weight is not None or self.cfg.distill is not None

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """Each label's binary cross-entropy against the teacher's softened probability, times the temperature's
        square."""
        soft = torch.sigmoid(teacher / temperature)
        return F.binary_cross_entropy_with_logits(outputs / temperature, soft) * temperature ** 2

    def thresholds(self, device: torch.device) -> torch.Tensor:
        """task.threshold as one value per label on `device`."""
        values = self.threshold_list()
        if self._thresholds is None or self._thresholds_of != (values, device):  # tuning may change them
            if len(values) != (self.num_classes or 1):
                raise KilnError(f"task.threshold has {len(values)} values for {self.num_classes} labels; give one "
                                "value, or one per label in label order")
            self._thresholds = torch.tensor(values, dtype=torch.float32, device=device)
            self._thresholds_of = (values, device)
        return self._thresholds

    def threshold_list(self) -> list[float]:
        """task.threshold as one value per label, as configured (no float32 rounding)."""
        t = self.cfg.threshold
        return list(t) if isinstance(t, list) else [t] * (self.num_classes or 1)

    def task_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.pos_weight is not None and self.pos_weight.device != outputs.device:
            self.pos_weight = self.pos_weight.to(outputs.device)
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype), pos_weight=self.pos_weight)

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per sample the mean over labels of the (unweighted) binary cross-entropy, summed over the batch."""
        loss = F.binary_cross_entropy_with_logits(outputs.float(), targets.float(), reduction="none")
        return loss.mean(1).sum()

    def predicted(self, outputs: torch.Tensor) -> torch.Tensor:
        """Multi-hot predictions (B, L): probability >= the label's threshold."""
        return (outputs.float().sigmoid() >= self.thresholds(outputs.device)).float()

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Label sets are already rows of 0/1, which MixUp/CutMix blend; binary cross-entropy takes the blend."""
        return targets.float()

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per sample the fraction of labels right (label-wise accuracy), summed over the batch. Against blended
        targets (MixUp/CutMix) a label counts by the weight the blend gives the prediction (0.7 for a label present
        in 70 % of the image and predicted), which is the plain accuracy for 0/1 targets."""
        predicted, truth = self.predicted(outputs), targets.float()
        return (predicted * truth + (1 - predicted) * (1 - truth)).mean(1).sum()

    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        # torchmetrics costs seconds to import: only where metrics are computed
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MultilabelAccuracy,
            MultilabelAveragePrecision,
            MultilabelF1Score,
            MultilabelPrecision,
            MultilabelRecall,
            MultilabelStatScores,
        )

        n = self.num_classes
        assert n is not None, "the number of labels is known once the data is loaded"
        # Thresholded metrics see 0/1 predictions (per-label thresholds applied here; 0.5 splits 0 from 1).
        decided: dict[str, Any] = {
            "acc": MultilabelAccuracy(n, average="micro", validate_args=False),
            "f1_micro": MultilabelF1Score(n, average="micro", validate_args=False),
            "f1_macro": MultilabelF1Score(n, average="macro", validate_args=False),
            "support": MultilabelStatScores(n, average="none", validate_args=False),
        }
        if detailed:
            decided |= {"precision": MultilabelPrecision(n, average="none", validate_args=False),
                        "recall": MultilabelRecall(n, average="none", validate_args=False),
                        "f1": MultilabelF1Score(n, average="none", validate_args=False)}
        ranked: dict[str, Any] = {"ap": MultilabelAveragePrecision(n, average="none", validate_args=False)}
        return _MultilabelMetrics(
            (MetricCollection(decided).to(device), lambda o, t: (self.predicted(o), t.long())),
            (MetricCollection(ranked).to(device), lambda o, t: (o.float().sigmoid(), t.long())),
            detailed=detailed)

    def val_metrics(self) -> list[str]:
        return ["acc", "f1_micro", "f1_macro", "map"]

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> per-label probabilities (B, L)."""
        return outputs.float().sigmoid()

    @classmethod
    def submission_value(cls, r: Prediction, names: list[str], as_index: bool) -> str:
        """The labels predicted, separated by spaces (names, or indices in the run's label order)."""
        chosen = r.label.split("|") if r.label else []
        return " ".join(str(names.index(n)) if as_index else n for n in chosen)

    def average(self, outputs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
        """Each label's probability averaged, answered as its logit (sigmoid gives the average back)."""
        return torch.logit(weighted_mean([o.sigmoid() for o in outputs], weights), eps=1e-7)

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        per_label = {name: {"precision": raw["precision"][i], "recall": raw["recall"][i], "f1": raw["f1"][i],
                            "ap": raw["ap"][i], "support": raw["support"][i]} for i, name in enumerate(names)}
        return {"loss": raw["loss"], "acc": raw["acc"], "f1_micro": raw["f1_micro"], "f1_macro": raw["f1_macro"],
                "map": raw["map"], "num_samples": raw["num_samples"], "per_label": per_label,
                "thresholds": self.threshold_list(), "class_names": names}

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> float:
        """Micro F1 of the thresholded probabilities."""
        decided = predictions >= self.thresholds(predictions.device)
        truth = targets.bool()
        tp = (decided & truth).sum()
        return float(2 * tp / (decided.sum() + truth.sum()).clamp_min(1))

    @classmethod
    def weakest(cls, results: Mapping[str, Any]) -> str | None:
        worst = sorted(results["per_label"].items(), key=lambda kv: kv[1]["f1"])[:3]
        return "hardest labels: " + ", ".join(f"{name} F1 {m['f1']:.3f}" for name, m in worst)

    def check_targets(self, class_names: list[str], train_targets: torch.Tensor | None, where: str) -> None:
        """At least two labels: with one, the task is a yes/no classification (task.name=multiclass)."""
        if len(class_names or range(self.num_classes or 0)) < 2:
            raise KilnError(f"{where} has {len(class_names)} label ({', '.join(class_names) or 'none'}); a multilabel "
                            "task needs at least two. For one yes/no label, use task.name=multiclass with two classes")

    def check_message(self) -> str:
        return (f"The multilabel task needs a multi-hot vector of {self.num_classes} values (0 or 1) per sample and "
                f"outputs (batch, {self.num_classes})")


    # -- targets
    @classmethod
    def parse_cells(cls, cells: Sequence[str], names: list[str], separator: str = "|", one_based: bool = False
                    ) -> tuple[list[float] | None, str]:
        """A multi-hot vector from a label set such as `cat|dog`."""
        from kiln.tasks.targets import multi_hot

        return multi_hot(cells[0], {name: i for i, name in enumerate(names)}, separator)

    @classmethod
    def target_names(cls, given: list[str] | None, raws: list[str], label_columns: list[str], separator: str,
                     where: Any) -> list[str]:
        from kiln.tasks.targets import label_names

        return list(given) if given else label_names(raws, separator)

    @classmethod
    def split_keys(cls, targets: torch.Tensor) -> torch.Tensor:
        """The sample's rarest label (no label: a group of its own)."""
        y = targets.bool()
        frequency = y.sum(0).float()
        rarity = torch.where(y, frequency.expand_as(y), torch.full_like(y, math.inf, dtype=torch.float32))
        rarest = rarity.argmin(1)
        return torch.where(y.any(1), rarest + 1, torch.zeros_like(rarest))

    @classmethod
    def fold_keys(cls, targets: torch.Tensor, folds: int) -> torch.Tensor:
        """The label sets themselves: folds deal them iteratively by label."""
        return targets.bool()

    @classmethod
    def target_text(cls, y: torch.Tensor, names: list[str]) -> str:
        return "|".join(n for n, v in zip(names, y.tolist()) if v) or "(none)"

    @classmethod
    def split_summary(cls, targets: torch.Tensor, names: list[str]) -> str:
        counts = targets.sum(0).long().tolist()
        return "label counts: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts))

    @classmethod
    def checked_batch(cls, targets: torch.Tensor, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> torch.Tensor:
        if targets.ndim != 2 or targets.shape[1] != num_classes or ((targets != 0) & (targets != 1)).any():
            raise KilnError(f"{shape}; the multilabel task needs a multi-hot vector of {num_classes} values (0 or 1) "
                            "per sample (e.g. torch.zeros(num_labels) with 1 at each label the sample has)")
        return targets.float()

    # -- predictions
    def answers(self, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
        """Every label at or above its threshold, and every label's probability, best first."""
        thresholds = self.threshold_list()
        out = []
        for text, p in zip(inputs, predicted.tolist()):
            ranked = sorted(zip(names, p, thresholds), key=lambda row: -row[1])
            chosen = [name for name, value, threshold in ranked if value >= threshold]
            out.append(Prediction(text, "|".join(chosen), None, [(n, v) for n, v, _ in ranked], "multilabel"))
        return out

    @classmethod
    def prediction_text(cls, r: Prediction) -> str:
        """`labels  each 0.9 ...`: every label at or above its threshold with its probability (`(none)`)."""
        chosen = set(r.label.split("|")) if r.label else set()
        return (r.label or "(none)") + "\t" + "  ".join(f"{lab} {p:.3f}" for lab, p in r.top if lab in chosen)

    @classmethod
    def prediction_json(cls, r: Prediction) -> dict[str, Any]:
        return {"input": r.input, "labels": r.label.split("|") if r.label else [], "probabilities": dict(r.top)}

    @classmethod
    def csv_header(cls, first: Prediction | None) -> list[str]:
        """The labels predicted, and every label's probability."""
        return ["file", "labels", *[name for name, _ in sorted(first.top if first else [])]]

    @classmethod
    def csv_row(cls, r: Prediction) -> list[str]:
        return [r.input, r.label, *[f"{p:.6f}" for _, p in sorted(r.top)]]

    # -- after training: thresholds; baseline
    def wants_validation_predictions(self) -> bool:
        return bool(self.cfg.tune_threshold)

    def after_fit_settings(self, probabilities: torch.Tensor, targets: torch.Tensor) -> dict[str, Any] | None:
        """task.tune_threshold: each label's threshold for the best validation F1."""
        return {"threshold": tuned_thresholds(probabilities, targets)} if self.cfg.tune_threshold else None

    @classmethod
    def baseline(cls, strength: float) -> tuple[Any, str]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        classifier = LogisticRegression(max_iter=1000, C=strength)
        return OneVsRestClassifier(classifier), "logistic regression per label"

    @classmethod
    def baseline_scores(cls, truth: Any, predicted: Any) -> dict[str, float]:
        from sklearn.metrics import f1_score

        return {"f1_micro": float(f1_score(truth, predicted, average="micro", zero_division=0)),
                "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0))}


class _MultilabelMetrics(Metrics):
    """mAP over the labels with positives (a label never present has no defined AP); support per label."""

    def __init__(self, *groups, detailed: bool):
        super().__init__(*groups)
        self.detailed = detailed

    def compute(self) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():  # "no positive samples": handled below
            warnings.filterwarnings("ignore", message="No positive samples")
            out = super().compute()
        stats = out.pop("support")  # (L, 5): tp, fp, tn, fn, support
        support = stats[:, 4]
        ap = out.pop("ap")
        present = support > 0
        out["map"] = ap[present].mean() if present.any() else ap.new_tensor(0.0)
        if self.detailed:
            out["ap"], out["support"] = ap, support
            out["num_samples"] = stats[0, :4].sum()
        return out


def tuned_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per label the threshold (0.05 ... 0.95) with the best F1 on these validation predictions; a label without
    positives keeps 0.5."""
    grid = torch.arange(0.05, 0.951, 0.05)
    out = []
    for label in range(probs.shape[1]):
        p, t = probs[:, label], targets[:, label].bool()
        if not t.any():
            out.append(0.5)
            continue
        predicted = p[None, :] >= grid[:, None]  # (thresholds, samples)
        tp = (predicted & t).sum(1).float()
        f1 = 2 * tp / (predicted.sum(1) + t.sum()).clamp_min(1)
        best = f1 == f1.max()
        out.append(round(float(grid[best][(grid[best] - 0.5).abs().argmin()]), 2))  # ties: nearest 0.5
    return out
