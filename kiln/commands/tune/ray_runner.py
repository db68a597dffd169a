"""`kiln tune --backend ray`: the same search on a Ray cluster with Ray Tune.

Optuna's samplers drive the search through Ray's OptunaSearch (random and grid use Ray's own variant
generator), Ray's schedulers stop hopeless trials (ASHA, HyperBand, median stopping), and each trial gets
`--gpus-per-trial` / `--cpus-per-trial`. Ray is an optional extra: pip install -e .[ray]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kiln.commands.tune.results import run_facts, save_results
from kiln.commands.tune.space import TuneConfig, base_raw, load_tune_config, trial_config
from kiln.commands.tune.study import check_metric, make_sampler
from kiln.core.errors import KilnError

log = logging.getLogger("kiln")


def ray_space(tune: TuneConfig) -> dict[str, Any]:
    return {key: p.ray_domain(grid=tune.sampler == "grid") for key, p in tune.space.items()}


def scheduler(tune: TuneConfig, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    grace = tune.grace(epochs)
    if tune.pruner == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=grace, reduction_factor=3)
    if tune.pruner == "hyperband":
        return HyperBandScheduler(time_attr="epoch", max_t=epochs, reduction_factor=3)
    if tune.pruner == "median":
        return MedianStoppingRule(time_attr="epoch", grace_period=grace, min_samples_required=2)
    return FIFOScheduler()


def _trainable(params: dict[str, Any], *, raw: dict[str, Any], metric: str, tune_dir: str, test: bool) -> None:
    """One Ray trial: a kiln run that reports the metric after every epoch."""
    from ray import tune as rt

    from kiln.track.console import setup_logging
    from kiln.train import session
    from kiln.train.callbacks import LambdaCallback

    setup_logging(-1)
    trial_id = rt.get_context().get_trial_id()  # unique within the experiment, e.g. "090c8fb6"
    # tune.test_trials: ranked by validation, tested only to compare
    cfg = trial_config(raw, params).with_values({"trainer.test_after_fit": test})

    def report(epoch: int, metrics: dict[str, float]) -> None:
        rt.report({metric: metrics[metric], "epoch": epoch, "trial": trial_id})

    session.train(cfg, run_dir=Path(tune_dir) / f"trial-{trial_id}", quiet=True,
                  callbacks=[LambdaCallback(on_epoch_end=report)])


def run_ray(tune_path: Path, overrides: list[str], *, address: str | None, gpus_per_trial: float,
            cpus_per_trial: float) -> Path:
    try:
        import ray
        from ray import tune as rt
    except ImportError:
        raise KilnError("--backend ray needs Ray: pip install -e '.[ray]'") from None
    from kiln.runs import RunDir

    tune = load_tune_config(tune_path)
    raw = base_raw(tune, overrides)
    check_metric(tune, raw)
    base_cfg = trial_config(raw, {})
    tune_dir = RunDir.create(base_cfg.log.dir, tune.name or base_cfg.name, prefix="tune-").path.resolve()
    (tune_dir / "tune.yaml").write_text(Path(tune_path).read_text())
    raw = _absolute_paths(raw)  # trials may run in other working directories (or on other machines)

    search_alg = None
    if tune.sampler in ("tpe", "cmaes"):
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=tune.metric, mode=tune.mode, sampler=make_sampler(tune), seed=tune.seed)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             logging_level=logging.WARNING)
    try:
        trainable = rt.with_resources(
            rt.with_parameters(_trainable, raw=raw, metric=tune.metric, tune_dir=str(tune_dir),
                               test=tune.test_trials),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        tuner = rt.Tuner(
            trainable, param_space=ray_space(tune),
            tune_config=rt.TuneConfig(metric=tune.metric, mode=tune.mode, search_alg=search_alg,
                                      scheduler=scheduler(tune, base_cfg.trainer.epochs),
                                      num_samples=1 if tune.sampler == "grid" else tune.trials),
            run_config=rt.RunConfig(storage_path=str(tune_dir / "ray"), name="study", verbose=0))
        grid = tuner.fit()
    finally:
        ray.shutdown()
    rows = []
    for i in range(len(grid)):
        result = grid[i]
        history = result.metrics_dataframe
        values = history[tune.metric].tolist() if history is not None and tune.metric in history else []
        epochs = len(values)
        state = "failed" if result.error else ("complete" if epochs >= base_cfg.trainer.epochs else "pruned")
        best = (max(values) if tune.mode == "max" else min(values)) if values else None
        trial_id = (result.metrics or {}).get("trial", str(i))
        rows.append({"trial": trial_id, "state": state, tune.metric: best if state == "complete" else None,
                     "epochs": epochs, **{f"param:{k}": v for k, v in (result.config or {}).items()},
                     **run_facts(str(tune_dir / f"trial-{trial_id}"), tune.metric),
                     "run_dir": str(tune_dir / f"trial-{trial_id}")})
    save_results(rows, tune, raw, tune_dir)
    return tune_dir


def _absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    data = dict(raw.get("data", {}))
    if data.get("root"):
        data["root"] = str(Path(data["root"]).resolve())
    return {**raw, "data": data}
