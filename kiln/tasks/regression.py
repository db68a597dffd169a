"""Regression: one or several numeric targets per sample. The model learns standardised targets (their mean and
standard deviation on the training split, stored with the run); metrics and predictions are in the original
units."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from kiln.config import TaskConfig
from kiln.tasks.base import Metrics, Task, to_columns

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}


class RegressionTask(Task):
    """task.loss mse (default), l1 or huber on standardised targets, which is also the reported loss; metrics MAE,
    RMSE and R² (averaged over the targets) in the original units; per target MAE and R² on request."""

    name = "regression"
    train_metric = "mae"
    headline = "mae"
    summary_metrics = ("loss", "mae", "rmse", "r2")

    def __init__(self, cfg: TaskConfig, num_classes: int | None):
        super().__init__(cfg, num_classes)
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
    def weakest(cls, results: dict[str, Any]) -> str | None:
        per_target = results.get("r2_per_target")
        return ("R² per target: " + ", ".join(f"{k} {v:.3f}" for k, v in per_target.items())) if per_target else None

    def check_message(self) -> str:
        return (f"The regression task needs {self.num_classes} number(s) per sample (a float tensor (batch,) or "
                f"(batch, {self.num_classes})) and outputs (batch, {self.num_classes})")
