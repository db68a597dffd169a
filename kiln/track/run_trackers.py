"""The trackers of a training run: its metric files, TensorBoard, W&B and MLflow as configured, and train.log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.config import Config
from kiln.core.errors import KilnError
from kiln.runs import RunDir
from kiln.track import Trackers
from kiln.track.console import add_log_file
from kiln.track.files import MetricsFiles

log = logging.getLogger("kiln")


def open_trackers(cfg: Config, run: RunDir, resume_epoch: int | None) -> tuple[Trackers, logging.Handler]:
    """The run's trackers (continuing at `resume_epoch`), and the handler writing the log to its train.log."""
    file_log = add_log_file(run.log_file)
    trackers: list[Any] = [MetricsFiles(run, resume_epoch)]
    if cfg.log.tensorboard:
        from kiln.track.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(run.tensorboard, resume_epoch))
    trackers += _external_trackers(cfg, run.path, resume_epoch is not None)
    return Trackers(trackers), file_log


def _external_trackers(cfg: Config, run_dir: Path, resuming: bool) -> list[Any]:
    """W&B and MLflow, when configured; one that cannot start is a warning, and training goes on."""
    from kiln.track.external import MlflowTracker, WandbTracker

    makers: list[tuple[str, Callable[[], Any]]] = []
    if cfg.log.wandb is not None:
        makers.append(("Weights & Biases", lambda: WandbTracker(cfg.log.wandb, run_dir, resuming)))
    if cfg.log.mlflow is not None:
        Path(cfg.log.dir).mkdir(parents=True, exist_ok=True)
        default_uri = f"sqlite:///{(Path(cfg.log.dir) / 'mlflow.db').resolve()}"
        makers.append(("MLflow", lambda: MlflowTracker(cfg.log.mlflow, run_dir, default_uri, cfg.name)))
    started = []
    for name, make in makers:
        try:
            started.append(make())
        except KilnError:
            raise  # not installed: a config the user must fix
        except Exception as e:  # noqa: BLE001 — an unreachable server must not stop training
            log.warning("%s tracker could not start (%s); training goes on without it", name, e)
    return started
