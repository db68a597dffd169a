"""TensorBoard event files in the run's tb/ folder: per-epoch scalars (learning rate included) and hparams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.config import flatten


class TensorBoardTracker:
    def __init__(self, folder: Path, resume_epoch: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # On resume, purge events from epochs that will be trained again.
        purge = resume_epoch + 1 if resume_epoch is not None else None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge)
        self.config: dict[str, Any] = {}

    def log_config(self, config: dict[str, Any]) -> None:
        # hparams take numbers, strings and booleans only
        self.config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(config).items()}
        text = "\n".join(f"    {k}: {v}" for k, v in self.config.items())
        self.writer.add_text("config", text, 0)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def log_test(self, metrics: dict[str, Any]) -> None:
        scalars = {f"hparam/test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        hparams = {k: (v if v is not None else "null") for k, v in self.config.items()}
        self.writer.add_hparams(hparams, scalars, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
