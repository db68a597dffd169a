"""`kiln cv`: k-fold cross-validation. Each fold is an ordinary run (data.cv set) in
`<log.dir>/<name>/cv-<timestamp>/fold-K/`: the fold held out of the training split is its test split, and model
selection (best checkpoint, early stopping) uses a validation split taken from the other folds, never the held-out
fold, so a fold's score is not optimistic. A killed `kiln cv` resumed with `--resume CV_DIR` continues with the folds
that did not finish. `cv.json` gathers each fold's held-out metrics, their mean and standard deviation, and with
`--test` each fold model's score on the real test split and that of their ensemble (averaged probabilities)."""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from kiln.config import Config, CvConfig
from kiln.errors import KilnError
from kiln.runs import RunDir

log = logging.getLogger("kiln")
METRICS = ("acc", "f1", "loss")


def load_plan(folder: Path) -> tuple[Config, int]:
    """The config and fold count a cv folder was started with (what `--resume` continues)."""
    from kiln.config import build_config

    plan = Path(folder) / "cv_plan.json"
    if not plan.is_file():
        raise KilnError(f"{folder} is not a kiln cv folder (no cv_plan.json)")
    saved = json.loads(plan.read_text())
    return build_config(saved["config"]), int(saved["folds"])


def run_cv(cfg: Config, folds: int, *, test: bool = False, resume: Path | None = None) -> dict[str, Any]:
    """Every fold of `cfg` (in a new cv folder, or the folds of `resume` that did not finish: pass the config and
    fold count `load_plan(resume)` gives)."""
    from kiln.train import session

    if folds < 2:
        raise KilnError("--folds must be at least 2")
    folder = Path(resume) if resume else Path(cfg.log.dir) / cfg.name / f"cv-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume is None:
        folder.mkdir(parents=True, exist_ok=False)
        (folder / "cv_plan.json").write_text(json.dumps({"folds": folds, "config": cfg.model_dump(mode="json")},
                                                        indent=2) + "\n")
    results = []
    for k in range(1, folds + 1):
        fold_cfg = cfg.model_copy(deep=True)
        fold_cfg.data.cv = CvConfig(folds=folds, fold=k)
        run = RunDir(folder / f"fold-{k}")
        if run.status().get("state") == "finished" and run.test_metrics() is not None:
            log.info("fold %d/%d: finished earlier", k, folds)
        else:
            log.info("fold %d/%d%s", k, folds, " (resuming)" if run.config_file.is_file() else "")
            session.train(fold_cfg, run_dir=run.path, quiet=True)
        metrics = run.test_metrics()
        assert metrics is not None, "every fold ends with its held-out fold evaluated"
        results.append({"fold": k, "run": str(run.path), **{m: metrics[m] for m in METRICS},
                        "num_samples": metrics["num_samples"]})
    summary: dict[str, Any] = {"folds": results, "held_out": _mean_std(results)}
    if test:
        summary["test"] = _test_folds(cfg, [RunDir(r["run"]) for r in results])
    (folder / "cv.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["folder"] = str(folder)
    return summary


def _mean_std(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {m: {"mean": statistics.fmean(r[m] for r in rows), "std": statistics.stdev(r[m] for r in rows)}
            for m in METRICS}


def _test_folds(cfg: Config, runs: list[RunDir]) -> dict[str, Any]:
    """Each fold's best model on the real test split, and the ensemble of their averaged probabilities."""
    from kiln.data import build_data
    from kiln.train.device import autocast
    from kiln.train.step import forward
    from kiln.trained import load_trained

    per_fold, summed, targets = [], None, None
    for run in runs:
        trained = load_trained(run, overrides=["data.cv=null"])
        data = build_data(trained.cfg.data, seed=0, device=trained.device, splits=("test",), vocab=trained.vocab)
        if data.test is None:
            raise KilnError("--test: the data has no test split to evaluate the folds on")
        probs, ys = [], []
        with torch.no_grad():
            for inputs, y in data.test.epoch(0):
                with autocast(trained.device, trained.precision):
                    out = trained.task.logits(forward(trained.model, inputs))
                probs.append(trained.task.probabilities(out).float().cpu())
                ys.append(y.cpu())
        p, targets = torch.cat(probs), torch.cat(ys)
        per_fold.append(float((p.argmax(1) == targets).float().mean()))
        summed = p if summed is None else summed + p
    assert summed is not None and targets is not None
    return {"acc_per_fold": per_fold, "acc_mean": statistics.fmean(per_fold),
            "ensemble_acc": float((summed.argmax(1) == targets).float().mean())}
