"""The Optuna study of a search: its storage — SQLite in the tune folder (resumable, shared by parallel workers,
readable by optuna-dashboard), an Optuna journal file on a shared file system (`journal:PATH`: several machines,
no server), or a database URL — the sampler, the pruner, and the metric check before a search starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.commands.tune.space import TuneConfig, trial_config
from kiln.core.errors import KilnError
from kiln.data.registry import known_num_classes
from kiln.tasks import build_task

STUDY_FILE = "study.db"
JOURNAL = "journal:"


def check_metric(tune: TuneConfig, raw: dict[str, Any]) -> None:
    cfg = trial_config(raw, {})
    num_classes = len(cfg.data.classes) if cfg.data.classes else known_num_classes(cfg.data.name)
    available = build_task(cfg.task, num_classes or 0).metric_names(cfg.data.val_split != 0) or []
    if num_classes is not None and tune.metric not in available:
        raise KilnError(f"metric={tune.metric!r} is never produced by {tune.base.name}; available: "
                        f"{', '.join(available)}")


def storage_url(tune_dir: Path) -> str:
    return f"sqlite:///{(Path(tune_dir) / STUDY_FILE).resolve()}"


def is_shared(url: str) -> bool:
    """A storage other `kiln tune` processes may be using right now (a journal file, a database server), as
    opposed to the tune folder's own study.db."""
    return not url.startswith("sqlite")


def journal_path(url: str) -> Path:
    return Path(url[len(JOURNAL):]).expanduser().resolve()


def make_storage(url: str):
    import optuna

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite"):  # several worker processes share the file: wait for its lock, do not fail
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


def make_sampler(tune: TuneConfig, worker: int = 0, shared: bool = False):
    """Parallel workers get different seeds, or they would all propose the same values; so do separate `kiln
    tune` processes on one shared study (each is worker 0 of its own), by their process id and host."""
    import optuna

    seed = tune.seed + 1000 * worker
    if shared:
        import os
        import socket
        import zlib

        seed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 10**6 * 1000

    if tune.sampler == "grid" and shared:  # the grid is queued in the study itself (kiln.commands.tune.runner)
        return optuna.samplers.RandomSampler(seed=seed)
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

    grace = tune.grace(epochs)  # epochs are reported as steps 1, 2, ...
    return {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=grace),
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=grace, reduction_factor=3),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=grace, max_resource=max(grace, epochs),
                                                           reduction_factor=3),
    }[tune.pruner]()


def finished_trials(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
