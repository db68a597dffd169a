"""`kiln tune` on Optuna: samplers, pruners and a SQLite study in the tune folder, so a search can be
resumed, shared by parallel workers, or opened with optuna-dashboard.

Each trial is an ordinary kiln run in <tune folder>/trial-NNN/ that reports its metric after every epoch.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

from kiln.config import to_yaml
from kiln.data.registry import get_dataset
from kiln.errors import KilnError, TrainingInterrupted, TrainingStopped
from kiln.runs import RunDir
from kiln.tasks import build_task
from kiln.train.callbacks import LambdaCallback
from kiln.tune.space import CategoricalParam, FloatParam, IntParam, TuneConfig, base_raw, trial_config

log = logging.getLogger("kiln")
STUDY_FILE = "study.db"
TRIAL_ERRORS = (KilnError, TrainingStopped, RuntimeError, ValueError, TypeError, ArithmeticError)


def check_metric(tune: TuneConfig, raw: dict[str, Any]) -> None:
    cfg = trial_config(raw, {})
    num_classes = len(cfg.data.classes) if cfg.data.classes else get_dataset(cfg.data.name).num_classes
    available = build_task(cfg.task, num_classes or 0).metric_names(cfg.data.val_split != 0) or []
    if num_classes is not None and tune.metric not in available:
        raise KilnError(f"metric={tune.metric!r} is never produced by {tune.base.name}; available: "
                        f"{', '.join(available)}")


def storage_url(tune_dir: Path) -> str:
    return f"sqlite:///{(Path(tune_dir) / STUDY_FILE).resolve()}"


def make_storage(url: str):
    import optuna

    if url.startswith("sqlite"):  # several worker processes share the file: wait for its lock, do not fail
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


def make_sampler(tune: TuneConfig, worker: int = 0):
    """Parallel workers get different seeds, or they would all propose the same values."""
    import optuna

    seed = tune.seed + 1000 * worker

    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(tune.grid(), seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    # TPE samples at random until it has n_startup_trials results; Optuna's default of 10 would make a short
    # search plain random search, so a quarter of the budget (3..10) is used.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, tune.trials // 4)))


def make_pruner(tune: TuneConfig, epochs: int):
    import optuna

    return {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3),
    }[tune.pruner]()


def suggest(trial, tune: TuneConfig) -> dict[str, Any]:
    values = {}
    for key, p in tune.space.items():
        if isinstance(p, FloatParam):
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            values[key] = trial.suggest_int(key, p.low, p.high, step=p.step, log=p.log)
        else:
            choices = p.choices if isinstance(p, CategoricalParam) else p
            values[key] = trial.suggest_categorical(key, choices)
    return values


class Objective:
    """One trial: a kiln run with the sampled values, reporting the metric each epoch for pruning."""

    def __init__(self, tune: TuneConfig, raw: dict[str, Any], tune_dir: Path):
        self.tune, self.raw, self.tune_dir = tune, raw, tune_dir

    def __call__(self, trial) -> float:
        import optuna

        from kiln.train import session

        values = suggest(trial, self.tune)
        cfg = trial_config(self.raw, values)
        cfg.trainer.test_after_fit = False
        run_dir = self.tune_dir / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("pid", os.getpid())
        history: list[float] = []

        def report(epoch: int, metrics: dict[str, float]) -> None:
            value = metrics[self.tune.metric]
            history.append(value)
            trial.set_user_attr("epochs", epoch)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} ({self.tune.metric}={value:.4f})")

        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
        try:
            session.train(cfg, run_dir=run_dir, quiet=True, callbacks=[LambdaCallback(on_epoch_end=report)])
        except optuna.TrialPruned:
            RunDir(run_dir).write_status("pruned", epoch=len(history))
            raise
        except TRIAL_ERRORS as e:  # NaN, a sampled value the model rejects, ...: a failed trial
            trial.set_user_attr("error", str(e).splitlines()[0][:500])
            log.warning("trial %d failed: %s", trial.number, str(e).splitlines()[0])
            raise
        best = max(history) if self.tune.mode == "max" else min(history)
        return best


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def optimize(tune: TuneConfig, raw: dict[str, Any], tune_dir: Path, storage: str, study_name: str,
             threads: int | None = None, quota: int | None = None, worker: int = 0) -> None:
    """Run trials until the study holds `tune.trials` finished (complete or pruned) ones."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage), sampler=make_sampler(tune, worker),
                              pruner=make_pruner(tune, trial_config(raw, {}).trainer.epochs))
    done = MaxTrialsCallback(tune.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    remaining = quota if quota is not None else tune.trials - _finished(study)
    if remaining <= 0:
        return
    from sqlalchemy.exc import OperationalError

    ran: list[int] = []
    for _ in range(5):
        try:
            # A trial that fails is recorded as failed and the search goes on; an interrupt stops the search.
            study.optimize(Objective(tune, raw, tune_dir), n_trials=remaining - len(ran), catch=TRIAL_ERRORS,
                           callbacks=[done, lambda study, trial: ran.append(trial.number)], gc_after_trial=True)
            return
        except OperationalError as e:  # a shared SQLite file briefly busy with another worker's write
            log.warning("study storage busy (%s); retrying", str(e).splitlines()[0])
            time.sleep(1.0)


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _worker(tune_path: str, overrides: list[str], tune_dir: str, storage: str, study_name: str,
            threads: int, gpu: str | None, quota: int, worker: int) -> None:
    """A parallel worker process (spawned): the same study, its own share of CPU threads or its own GPU."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from kiln.track.console import setup_logging
    from kiln.tune.space import load_tune_config

    setup_logging(-1)
    tune = load_tune_config(Path(tune_path))
    optimize(tune, base_raw(tune, overrides), Path(tune_dir), storage, study_name, threads, quota, worker)


def run_tune(tune_path: Path, overrides: list[str], *, resume: Path | None = None, workers: int = 1,
             storage: str | None = None) -> Path:
    """Create (or resume) the study and run it with `workers` processes; returns the tune folder."""
    import optuna
    from optuna.trial import TrialState

    from kiln.tune.space import load_tune_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # kiln logs the trials itself
    tune = load_tune_config(tune_path)
    raw = base_raw(tune, overrides)
    check_metric(tune, raw)
    base_cfg = trial_config(raw, {})
    name = tune.name or base_cfg.name
    if resume:
        tune_dir = Path(resume)
        if not (tune_dir / "tune.yaml").is_file():
            raise KilnError(f"{tune_dir} is not a kiln tune folder (no tune.yaml)")
    else:
        tune_dir = RunDir.create(base_cfg.log.dir, name, prefix="tune-").path
        (tune_dir / "tune.yaml").write_text(Path(tune_path).read_text())
    url = storage or storage_url(tune_dir)
    study_name = f"{name}-{tune_dir.name}"
    study = optuna.create_study(study_name=study_name, storage=make_storage(url), load_if_exists=True,
                                direction="maximize" if tune.mode == "max" else "minimize",
                                sampler=make_sampler(tune))
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:  # left running by an interrupted search: recorded as failed, the search re-runs that slot
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    if stale:
        log.info("resuming: %d interrupted trial(s) marked failed", len(stale))
    log.info("tune folder: %s (storage %s)", tune_dir, url)
    try:
        if workers <= 1:
            optimize(tune, raw, tune_dir, url, study_name)
        else:
            _parallel(tune_path, overrides, tune_dir, url, study_name, workers, tune.trials - _finished(study))
    except (KeyboardInterrupt, TrainingInterrupted):
        raise TrainingInterrupted(
            f"search interrupted; continue it with: kiln tune {tune_path} --resume {tune_dir}") from None
    finally:
        write_results(optuna.load_study(study_name=study_name, storage=make_storage(url)), tune, raw, tune_dir)
    return tune_dir


def _parallel(tune_path, overrides, tune_dir, url, study_name, workers: int, remaining: int) -> None:
    """Split the remaining trials between the workers up front, so together they run exactly that many."""
    import multiprocessing as mp

    import torch

    gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tune_path), list(overrides), str(tune_dir), url, study_name,
                                               threads, gpus[i % len(gpus)] if gpus else None,
                                               remaining // workers + (i < remaining % workers), i))
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        log.warning("%d tune worker(s) exited with errors (codes %s)", len(failed), failed)


def visible_gpus(visible: str | None, count: int) -> list[str]:
    """The GPU ids to hand out to workers: the entries of an existing CUDA_VISIBLE_DEVICES (ids or UUIDs),
    else 0..count-1. A worker's CUDA_VISIBLE_DEVICES must name a GPU the parent may use, not its index."""
    if visible is None:
        return [str(i) for i in range(count)]
    return [v.strip() for v in visible.split(",") if v.strip()][:count]


def write_results(study, tune: TuneConfig, raw: dict[str, Any], tune_dir: Path) -> list[dict[str, Any]]:
    """results.csv (ranked), best.yaml (runnable with kiln train), and the study's plots."""
    rows = [{"trial": t.number, "state": t.state.name.lower(), tune.metric: t.value,
             "epochs": t.user_attrs.get("epochs", 0), **{f"param:{k}": v for k, v in t.params.items()},
             "run_dir": t.user_attrs.get("run_dir", "")} for t in study.get_trials(deepcopy=False)]
    ranked = save_results(rows, tune, raw, tune_dir)
    _plots(study, tune_dir)
    return ranked


def save_results(rows: list[dict[str, Any]], tune: TuneConfig, raw: dict[str, Any], tune_dir: Path):
    """Rank the trials by the metric, write results.csv and the best complete trial's config as best.yaml."""
    scored = sorted((r for r in rows if r[tune.metric] is not None and r["state"] == "complete"),
                    key=lambda r: r[tune.metric], reverse=tune.mode == "max")
    ranked = [{"rank": i + 1, **r} for i, r in enumerate(scored)] + \
             [{"rank": "", **r} for r in rows if r not in scored]
    columns = list(dict.fromkeys(k for r in ranked for k in r))
    with open(tune_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(ranked)
    if scored:
        best = scored[0]
        params = {k.removeprefix("param:"): v for k, v in best.items() if k.startswith("param:")}
        (tune_dir / "best.yaml").write_text(f"# best trial {best['trial']} of {tune_dir}: {tune.metric}="
                                            f"{best[tune.metric]:.6g}\n" + to_yaml(trial_config(raw, params)))
    return ranked


def _plots(study, tune_dir: Path) -> None:
    """Optuna's own figures: PNG through matplotlib, and interactive HTML when plotly is installed."""
    import importlib.util
    import warnings

    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return
    import optuna.visualization as plotly_vis
    import optuna.visualization.matplotlib as mpl_vis

    from kiln.viz.style import RC

    folder = tune_dir / "plots"
    folder.mkdir(exist_ok=True)
    has_plotly = importlib.util.find_spec("plotly") is not None
    for name in ("plot_optimization_history", "plot_param_importances", "plot_parallel_coordinate", "plot_slice"):
        try:
            import matplotlib.pyplot as plt

            with warnings.catch_warnings(), plt.rc_context(RC):  # type: ignore[arg-type]
                warnings.simplefilter("ignore")
                ax = getattr(mpl_vis, name)(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.savefig(folder / f"{name[5:]}.png", bbox_inches="tight")
                plt.close(fig)
            if has_plotly:
                getattr(plotly_vis, name)(study).write_html(folder / f"{name[5:]}.html", include_plotlyjs="cdn")
        except Exception as e:  # noqa: BLE001 — a plot that cannot be drawn (e.g. one parameter) is not fatal
            log.debug("plot %s skipped: %s", name, e)


def summary_table(tune_dir: Path):
    """Rows of results.csv, for the CLI's table."""
    with open(tune_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


