"""`kiln cv`: k-fold cross-validation. Each fold is an ordinary run (data.cv set) in
`<log.dir>/<name>/cv-<timestamp>/fold-K/`: the fold held out of the training split is its test split, and model
selection (best checkpoint, early stopping) uses a validation split taken from the other folds, never the held-out
fold, so a fold's score is not optimistic. A killed `kiln cv` resumed with `--resume CV_DIR` continues with the folds
that did not finish. `cv.json` gathers each fold's held-out metrics, their mean and standard deviation, and with
`--test` each fold model's score on the real test split and that of their ensemble (averaged predictions)."""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from kiln.config import Config, CvConfig
from kiln.core.errors import KilnError
from kiln.core.formats import by_name
from kiln.core.upgrade import upgrade_saved
from kiln.runs import RunDir, RunStatus

log = logging.getLogger("kiln")


def fold_metrics(cfg: Config) -> tuple[str, ...]:
    """The held-out metrics cv.json and the table show: the task's test summary (accuracy and macro F1; micro and
    macro F1 and mAP; MAE, RMSE and R²; mIoU; a detector's mAP), loss last where the task measures one in
    evaluation (a detector does not)."""
    from kiln.tasks import task_class

    task = task_class(cfg.task.name)
    names = [m for m in task.summary_metrics if m not in ("loss", "acc_top5")] or [h for h in [task.headline] if h]
    return (*names, *(["loss"] if task.eval_loss else []))  # a task of yours without a summary: its headline


def load_plan(folder: Path) -> tuple[Config, int]:
    """The config and fold count a cv folder was started with (what `--resume` continues)."""
    from kiln.config import build_config

    plan = Path(folder) / "cv_plan.json"
    if not plan.is_file():
        raise KilnError(f"{folder} is not a kiln cv folder (no cv_plan.json)")
    saved = json.loads(plan.read_text())
    return build_config(upgrade_saved(saved["config"])), int(saved["folds"])


def run_cv(cfg: Config, folds: int, *, test: bool = False, resume: Path | None = None) -> dict[str, Any]:
    """Every fold of `cfg` (in a new cv folder, or the folds of `resume` that did not finish: pass the config and
    fold count `load_plan(resume)` gives)."""
    from kiln.tasks import task_class
    from kiln.train import session

    if folds < 2:
        raise KilnError("--folds must be at least 2")
    if test and not task_class(cfg.task.name).scores_averages():
        raise KilnError(f"--test scores the ensemble of the folds' averaged predictions, which task {cfg.task.name} "
                        "cannot average (Task.score); run kiln cv without --test, and kiln test a fold's run on the "
                        "test split")
    folder = Path(resume) if resume else Path(cfg.log.dir) / cfg.name / f"cv-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume is None:
        folder.mkdir(parents=True, exist_ok=False)
        (folder / "cv_plan.json").write_text(json.dumps({"folds": folds, "config": cfg.model_dump(mode="json")},
                                                        indent=2) + "\n")
    results, metric_names = [], fold_metrics(cfg)
    for k in range(1, folds + 1):
        fold_cfg = cfg.with_values({"data.cv": CvConfig(folds=folds, fold=k)})
        run = RunDir(folder / f"fold-{k}")
        if run.state() is RunStatus.FINISHED and run.test_metrics() is not None:
            log.info("fold %d/%d: finished earlier", k, folds)
        else:
            log.info("fold %d/%d%s", k, folds, " (resuming)" if run.is_run else "")
            session.train(fold_cfg, run_dir=run.path, quiet=True)
        metrics = run.test_metrics()
        assert metrics is not None, "every fold ends with its held-out fold evaluated"
        results.append({"fold": k, "run": str(run.path), **{m: by_name(metrics)[m] for m in metric_names},
                        "num_samples": metrics["num_samples"]})
    summary: dict[str, Any] = {"task": cfg.task.name, "metrics": list(metric_names), "folds": results,
                               "held_out": _mean_std(results, metric_names)}
    if test:
        summary["test"] = _test_folds(cfg, [RunDir(r["run"]) for r in results])
    (folder / "cv.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["folder"] = str(folder)
    return summary


def _mean_std(rows: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {m: {"mean": statistics.fmean(r[m] for r in rows), "std": statistics.stdev(r[m] for r in rows)}
            for m in metrics}


def _test_folds(cfg: Config, runs: list[RunDir]) -> dict[str, Any]:
    """Each fold's best model on the real test split, and the ensemble of their averaged predictions (class or
    label probabilities, values), scored by the task's headline metric (accuracy, micro F1, MAE)."""
    from kiln.train.evaluation import collect_predictions
    from kiln.train.trained import load_trained

    per_fold, summed, targets, task = [], None, None, None
    for run in runs:
        trained = load_trained(run, overrides=["data.cv=null"])
        data = trained.test_data()
        if data.test is None:
            raise KilnError("--test: the data has no test split to evaluate the folds on")
        task = trained.task
        p, targets = collect_predictions(trained.model, data.test, task, trained.device, trained.precision)
        per_fold.append(task.score(p, targets))
        summed = p if summed is None else summed + p
    assert summed is not None and targets is not None and task is not None
    metric = task.headline
    return {"metric": metric, f"{metric}_per_fold": per_fold, f"{metric}_mean": statistics.fmean(per_fold),
            f"ensemble_{metric}": task.score(summed / len(runs), targets)}
