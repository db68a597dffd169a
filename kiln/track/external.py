"""Experiment trackers beyond files and TensorBoard: Weights & Biases and MLflow (optional extras).

Each receives the resolved config as hyperparameters, every epoch's metrics and the final test metrics.
A tracker that cannot start or fails later is a warning (see kiln.track.Trackers), never a lost run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.config import flatten
from kiln.core.errors import KilnError


class WandbTracker:
    """`log.wandb: {project, mode: online|offline}`; offline runs land in RUN_DIR/wandb/ (wandb sync uploads them)."""

    def __init__(self, cfg, run_dir: Path, resume: bool):
        try:
            import wandb
        except ImportError:
            raise KilnError("log.wandb needs Weights & Biases: pip install -e '.[wandb]'") from None
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(run_dir),
                              name=f"{run_dir.parent.name}/{run_dir.name}", id=f"kiln-{run_dir.name}",
                              resume="allow" if resume else None, reinit="finish_previous")

    def log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "epoch": epoch}, step=epoch)

    def log_test(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update({f"test/{k}": v for k, v in metrics.items()})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """`log.mlflow: {tracking_uri, experiment}`; default: a local SQLite store, <log.dir>/mlflow.db."""

    def __init__(self, cfg, run_dir: Path, default_uri: str, experiment: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise KilnError("log.mlflow needs MLflow: pip install -e '.[mlflow]'") from None
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri or default_uri)
        name = cfg.experiment or experiment
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        runs = self.client.search_runs([experiment_id], f"tags.kiln_run_dir = '{run_dir}'")
        if runs:  # a resumed kiln run continues its MLflow run
            self.run_id = runs[0].info.run_id
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name,
                                                 tags={"kiln_run_dir": str(run_dir)}).info.run_id

    def log_config(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items() if k not in existing]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()
                                                    if isinstance(v, (int, float))])

    def log_test(self, metrics: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"test/{k}", float(v), now, 0)
                                                    for k, v in metrics.items() if isinstance(v, (int, float))])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
