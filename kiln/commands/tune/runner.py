"""`kiln tune` on Optuna: create or resume the study in a tune folder, run its trials (in this process or in
parallel workers), and write the results.

Each trial is an ordinary kiln run in <tune folder>/trial-NNN/ that reports its metric after every epoch.
The parts: study.py (storage, sampler, pruner), objective.py (one trial), workers.py (parallel processes),
results.py (results.csv, best.yaml, plots).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kiln.commands.tune.objective import optimize
from kiln.commands.tune.results import write_results
from kiln.commands.tune.space import base_raw, trial_config
from kiln.commands.tune.study import (
    JOURNAL,
    check_metric,
    finished_trials,
    is_shared,
    journal_path,
    make_sampler,
    make_storage,
    storage_url,
)
from kiln.commands.tune.workers import run_parallel
from kiln.core.errors import KilnError, TrainingInterrupted
from kiln.runs import RunDir

log = logging.getLogger("kiln")


def run_tune(tune_path: Path, overrides: list[str], *, resume: Path | None = None, workers: int = 1,
             storage: str | None = None) -> Path:
    """Create (or resume) the study and run it with `workers` processes; returns the tune folder."""
    import optuna
    from optuna.trial import TrialState

    from kiln.commands.tune.space import load_tune_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # kiln logs the trials itself
    tune = load_tune_config(tune_path)
    raw = base_raw(tune, overrides)
    check_metric(tune, raw)
    base_cfg = trial_config(raw, {})
    name = tune.name or base_cfg.name
    tune_dir = _tune_folder(tune_path, base_cfg.log.dir, name, resume, storage)
    url = storage or storage_url(tune_dir)
    # A shared storage holds one study per search name, which every `kiln tune` started on it joins.
    study_name = name if is_shared(url) else f"{name}-{tune_dir.name}"
    study = _open_study(tune, url, study_name)
    if not is_shared(url):  # this process is the study's only user: what still runs was interrupted
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in stale:  # recorded as failed, the search re-runs that slot
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if stale:
            log.info("resuming: %d interrupted trial(s) marked failed", len(stale))
    log.info("tune folder: %s (storage %s)", tune_dir, url)
    try:
        if workers <= 1:
            optimize(tune, raw, tune_dir, url, study_name)
        else:
            run_parallel(tune_path, overrides, tune_dir, url, study_name, workers, tune.trials - finished_trials(study))
    except (KeyboardInterrupt, TrainingInterrupted):
        raise TrainingInterrupted(
            f"search interrupted; continue it with: kiln tune {tune_path} --resume {tune_dir}") from None
    finally:
        write_results(optuna.load_study(study_name=study_name, storage=make_storage(url)), tune, raw, tune_dir)
    return tune_dir


def _open_study(tune, url: str, study_name: str):
    """Create the study, or join it. On a shared storage a grid is queued up front by the process that created
    the study, its points then taken one by one (atomically) by every worker: no point runs twice, which a grid
    sampler in each worker cannot promise when two of them start together."""
    import itertools
    import time

    import optuna

    direction = optuna.study.StudyDirection.MAXIMIZE if tune.mode == "max" else optuna.study.StudyDirection.MINIMIZE
    storage, sampler = make_storage(url), make_sampler(tune, shared=is_shared(url))
    if not is_shared(url):
        return optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, direction=direction,
                                   sampler=sampler)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        created = False
    else:
        created = True
    if tune.sampler == "grid":
        grid = tune.grid()
        points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        if created:
            for point in points:
                study.enqueue_trial(point)
        deadline = time.time() + 60
        while len(study.get_trials(deepcopy=False)) < len(points) and time.time() < deadline:
            time.sleep(0.2)  # the creator is still queueing the grid
    return study


def _tune_folder(tune_path: Path, log_dir: Path, name: str, resume: Path | None, storage: str | None) -> Path:
    """A new tune folder; the one given to --resume; or, for a journal file, the folder holding it, which every
    worker on the study shares (trials are numbered by the study, so their folders never collide)."""
    if storage and storage.startswith(JOURNAL):
        folder = journal_path(storage).parent
        folder.mkdir(parents=True, exist_ok=True)
        saved, given = folder / "tune.yaml", Path(tune_path).read_text()
        if saved.is_file() and saved.read_text() != given:
            raise KilnError(f"{saved} holds another tune config than {tune_path}: the workers of one study share "
                            "one; give each search its own journal file")
        if not saved.is_file():
            saved.write_text(given)
        return folder
    if resume:
        if not (Path(resume) / "tune.yaml").is_file():
            raise KilnError(f"{resume} is not a kiln tune folder (no tune.yaml)")
        return Path(resume)
    folder = RunDir.create(log_dir, name, prefix="tune-").path
    (folder / "tune.yaml").write_text(Path(tune_path).read_text())
    return folder
