"""`kiln tune` on Optuna: create or resume the study in a tune folder, run its trials (in this process or in
parallel workers), and write the results.

Each trial is an ordinary kiln run in <tune folder>/trial-NNN/ that reports its metric after every epoch.
The parts: study.py (storage, sampler, pruner), objective.py (one trial), workers.py (parallel processes),
results.py (results.csv, best.yaml, plots).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kiln.errors import KilnError, TrainingInterrupted
from kiln.runs import RunDir
from kiln.tune.objective import optimize
from kiln.tune.results import write_results
from kiln.tune.space import base_raw, trial_config
from kiln.tune.study import check_metric, finished_trials, make_sampler, make_storage, storage_url
from kiln.tune.workers import run_parallel

log = logging.getLogger("kiln")


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
            run_parallel(tune_path, overrides, tune_dir, url, study_name, workers, tune.trials - finished_trials(study))
    except (KeyboardInterrupt, TrainingInterrupted):
        raise TrainingInterrupted(
            f"search interrupted; continue it with: kiln tune {tune_path} --resume {tune_dir}") from None
    finally:
        write_results(optuna.load_study(study_name=study_name, storage=make_storage(url)), tune, raw, tune_dir)
    return tune_dir
