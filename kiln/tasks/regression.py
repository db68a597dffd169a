"""Regression: one or several numeric targets per sample. The model learns standardised targets (their mean and
standard deviation on the training split, stored with the run); metrics and predictions are in the original
units."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kiln.config import RegressionTaskConfig
from kiln.core.errors import KilnError
from kiln.tasks.base import Metrics, Prediction, Task, to_columns, weighted_mean

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}


class RegressionTask(Task):
    """task.loss mse (default), l1 or huber on standardised targets, which is also the reported loss; metrics MAE,
    RMSE and R² (averaged over the targets) in the original units; per target MAE and R² on request."""

    name = "regression"
    train_metric = "mae"
    headline = "mae"
    summary_metrics = ("loss", "mae", "rmse", "r2")
    report_view = "predicted_vs_true"
    noun = "targets"
    several_columns = True
    class_per_sample = False
    file_hint = "target values"
    default_count = 1
    exported = ("target_mean", "target_std")
    output_doc = ("standardised values (batch, targets); value * target_std + target_mean gives the original units "
                  "(target_mean/target_std null: the values are in the original units)")

    def __init__(self, cfg: RegressionTaskConfig, num_classes: int | None):
        super().__init__(cfg, num_classes)
        self.cfg: RegressionTaskConfig = cfg
        self.loss_fn = LOSSES[cfg.loss if cfg.loss in LOSSES else "mse"]
        k = num_classes or 1
        mean = cfg.target_mean if cfg.standardize and cfg.target_mean is not None else [0.0] * k
        std = cfg.target_std if cfg.standardize and cfg.target_std is not None else [1.0] * k
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)

    def _scale(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean.device != device:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self.mean, self.std

    def standardised(self, targets: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale(targets.device)
        return (to_columns(targets).float() - mean) / std

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> predicted values (B, k) in the targets' original units."""
        mean, std = self._scale(outputs.device)
        return outputs.float() * std + mean

    @classmethod
    def submission_value(cls, r: Prediction, names: list[str], as_index: bool) -> str:
        """The predicted value (several targets: the values, separated by spaces), in the targets' units."""
        return " ".join(f"{v:.6g}" for _, v in r.top)

    def average(self, outputs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
        """The values averaged (the outputs are the values, standardised: a linear map of them)."""
        return weighted_mean(outputs, weights)

    def task_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs.float(), self.standardised(targets))

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs.float(), self.standardised(targets), reduction="none").mean(1).sum()

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per sample the mean absolute error (original units) over the targets, summed over the batch."""
        return (self.predictions(outputs.detach()) - to_columns(targets).float()).abs().mean(1).sum()

    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        # torchmetrics costs seconds to import: only where metrics are computed
        from torchmetrics import MetricCollection
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

        k = self.num_classes or 1
        metrics: dict[str, Any] = {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                                   "r2": R2Score()}
        if detailed and k > 1:
            metrics["r2_per_target"] = R2Score(multioutput="raw_values")

        def prepare(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pred, true = self.predictions(outputs), to_columns(targets).float()
            return (pred.squeeze(1), true.squeeze(1)) if k == 1 else (pred, true)

        return Metrics((MetricCollection(metrics).to(device), prepare))

    def val_metrics(self) -> list[str]:
        return ["mae", "rmse", "r2"]

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        out = {"loss": raw["loss"], "mae": raw["mae"], "rmse": raw["rmse"], "r2": raw["r2"],
               "num_samples": raw["num_samples"], "target_names": names,
               "target_mean": self.mean.tolist(), "target_std": self.std.tolist()}
        if "r2_per_target" in raw:
            out["r2_per_target"] = dict(zip(names, raw["r2_per_target"]))
        return out

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> float:
        """Mean absolute error (original units)."""
        return float((predictions - to_columns(targets).float()).abs().mean())

    @classmethod
    def weakest(cls, results: Mapping[str, Any]) -> str | None:
        per_target = results.get("r2_per_target")
        return ("R² per target: " + ", ".join(f"{k} {v:.3f}" for k, v in per_target.items())) if per_target else None

    def check_message(self) -> str:
        return (f"The regression task needs {self.num_classes} number(s) per sample (a float tensor (batch,) or "
                f"(batch, {self.num_classes})) and outputs (batch, {self.num_classes})")

    # -- targets
    @classmethod
    def parse_cells(cls, cells: Sequence[str], names: list[str], separator: str = "|", one_based: bool = False
                    ) -> tuple[list[float] | None, str]:
        """Numbers, one cell per target column."""
        from kiln.tasks.targets import numbers

        return numbers(cells, names)

    @classmethod
    def target_names(cls, given: list[str] | None, raws: list[str], label_columns: list[str], separator: str,
                     where: Any) -> list[str]:
        return list(label_columns)  # the target columns name the outputs

    @classmethod
    def split_keys(cls, targets: torch.Tensor) -> torch.Tensor:
        """The quantile bin (of ten) of the values."""
        from kiln.tasks.targets import quantile_bins

        return quantile_bins(targets, 10)

    @classmethod
    def fold_keys(cls, targets: torch.Tensor, folds: int) -> torch.Tensor:
        """Quantile bins holding at least `folds` samples each."""
        from kiln.tasks.targets import quantile_bins

        return quantile_bins(targets, max(1, min(10, len(targets) // folds)))

    @classmethod
    def target_text(cls, y: torch.Tensor, names: list[str]) -> str:
        return " ".join(f"{n} {v:.4g}" for n, v in zip(names, y.reshape(-1).tolist()))

    @classmethod
    def split_summary(cls, targets: torch.Tensor, names: list[str]) -> str:
        y = targets.float().reshape(len(targets), -1)
        return "targets: " + ", ".join(f"{n} mean {m:.4g} std {s:.4g} range {lo:.4g}–{hi:.4g}" for n, m, s, lo, hi in
                                       zip(names, y.mean(0).tolist(), y.std(0).tolist(), y.min(0).values.tolist(),
                                           y.max(0).values.tolist()))

    @classmethod
    def default_names(cls, count: int) -> list[str]:
        return [f"target{i}" if count > 1 else "target" for i in range(count)]

    @classmethod
    def checked_batch(cls, targets: torch.Tensor, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> torch.Tensor:
        flat = targets.reshape(len(targets), -1) if targets.ndim else targets
        if targets.ndim not in (1, 2) or flat.shape[1] != num_classes or targets.dtype == torch.bool:
            raise KilnError(f"{shape}; the regression task needs {num_classes} number(s) per sample (a float, or a "
                            "vector of data.num_classes values)")
        if not torch.isfinite(targets.float()).all():
            raise KilnError(f"{shape} and include NaN or infinite values; regression targets must be finite numbers")
        return targets.float()

    # -- predictions
    def answers(self, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
        """Every target's value in its original units."""
        return [Prediction(text, "  ".join(f"{n} {v:.6g}" for n, v in zip(names, values)), None,
                           list(zip(names, values)), "regression") for text, values in zip(inputs, predicted.tolist())]

    @classmethod
    def prediction_text(cls, r: Prediction) -> str:
        return r.label

    @classmethod
    def prediction_json(cls, r: Prediction) -> dict[str, Any]:
        return {"input": r.input, "values": dict(r.top)}

    @classmethod
    def csv_header(cls, first: Prediction | None) -> list[str]:
        """One column per target, in the original units."""
        return ["file", *[name for name, _ in (first.top if first else [])]]

    @classmethod
    def csv_row(cls, r: Prediction) -> list[str]:
        return [r.input, *[f"{v:.6g}" for _, v in r.top]]

    # -- baseline
    @classmethod
    def baseline(cls, strength: float) -> tuple[Any, str]:
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0), "ridge regression"  # its own regularisation, the same on any inputs

    @classmethod
    def baseline_scores(cls, truth: Any, predicted: Any) -> dict[str, float]:
        from sklearn.metrics import mean_absolute_error, r2_score

        return {"mae": float(mean_absolute_error(truth, predicted)), "r2": float(r2_score(truth, predicted))}
