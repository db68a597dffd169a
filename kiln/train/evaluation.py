"""Evaluating a trained model on the test split: `kiln test`, and the test at the end of `kiln train`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from kiln.config import Config, DataConfig
from kiln.core.dist import ProcessInfo
from kiln.core.formats import TestResults
from kiln.data import Data
from kiln.data.loaders import Batches
from kiln.tasks import Task
from kiln.train.loop import TestDetail, evaluate
from kiln.train.plan import RunPlan
from kiln.train.trained import Trained

log = logging.getLogger("kiln")


def run_evaluation(trained: Trained, data: Data, *, write: bool = True, limit: int | None = None,
                   out: Path | None = None, scored: dict[str, Any] | None = None) -> TestResults:
    """Evaluate `trained` on the test split and write test_metrics.json into its run (`write` false: write
    nothing, e.g. on the ranks other than 0), or `out` when the data scored is not the run's own (`scored`: which
    data it was, recorded in the results). On the run's own whole test split in one process, the predictions are
    kept too (test_predictions.pt, under the checkpoint's checksum), so `kiln report` shows the mistakes without
    predicting again."""
    from kiln.core import dist
    from kiln.tasks import build_task

    model, device, precision, checkpoint = trained.model, trained.device, trained.precision, trained.checkpoint
    run = trained.run if write else None
    checksum, epoch = trained.state.sha256, trained.state.loop.epoch
    task = build_task(trained.cfg.task, data.info.num_classes)
    keep: list[tuple[torch.Tensor, torch.Tensor]] | None = \
        [] if run is not None and out is None and limit is None and checksum and not dist.current().distributed \
        else None
    raw = evaluate(model, data.require("test"), task, device=device, precision=precision, limit=limit,
                   test=TestDetail(keep))
    if keep and run is not None and all(isinstance(t, torch.Tensor) for _, t in keep):  # targets kiln can store
        run.write_test_predictions(checksum or "", torch.cat([p.float().cpu() for p, _ in keep]),
                                   torch.cat([t.cpu() for _, t in keep]))
    results = cast(TestResults, {"checkpoint": str(checkpoint), "epoch": epoch, "task": task.name,
                                 **({"data": scored} if scored else {}), **task.test_results(raw, data.info.class_names)})
    if run is None:
        return results
    results["file"] = str(run.write_test_metrics(results, out))
    log.info("test: %s  (%s)", task.describe(results), Path(checkpoint).name)
    return results


@torch.no_grad()
def collect_predictions(model: torch.nn.Module, batches: Batches, task: Task, device: torch.device, precision: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's predictions (class or label probabilities, values in original units) and the targets of every
    sample of `batches`, in order, on the CPU."""
    from kiln.train.device import autocast
    from kiln.train.strategy import whole

    predictions, targets = [], []
    with whole(model):
        for inputs, y in batches.epoch(0):
            with autocast(device, precision):
                predictions.append(task.predictions(task.outputs(model, inputs)).float().cpu())
            targets.append(y.cpu())
    return torch.cat(predictions), torch.cat(targets)


# The data settings that choose which samples are scored: changing one means testing on other data. data.root
# does too where the files are the user's own; for a published dataset (Fashion-MNIST, CIFAR, AG News) it only
# says where the same files lie on this machine.
DATA_CHOICE = ("name", "args", "test_args", "test_split", "classes")


def run_test(run_dir: Path | str, *, checkpoint: str = "best", overrides: list[str] | tuple[str, ...] = (),
             out: Path | None = None) -> TestResults:
    """`kiln test`: evaluate a trained run's checkpoint on its test split, written to test_metrics.json. On other
    data (data.root=..., another test split) the results go to their own file — `out`, or
    test_metrics-<data>.json in the run folder — and say which data was scored; the run's own stay untouched."""
    from kiln.train.trained import load_trained

    trained = load_trained(run_dir, checkpoint, overrides)
    cfg, device = trained.cfg, trained.device
    saved = trained.run.config()
    cfg = _other_folder_is_all_test(cfg, saved, overrides)
    scored = other_data(cfg.data, saved.data)
    if scored is not None and out is None:
        out = trained.run.other_test_metrics_file(Path(str(scored.get("root") or "")).name or str(scored["name"]))
    data = RunPlan.of(cfg, device, ProcessInfo()).data(("test",), vocab=trained.vocab)
    limit = 2 if cfg.trainer.fast_dev_run else None
    return run_evaluation(trained, data, limit=limit, out=out, scored=scored)


def other_data(data: DataConfig, saved: DataConfig) -> dict[str, Any] | None:
    """Which data is scored, when it is not the run's own test split (None when it is)."""
    now, before = data.model_dump(mode="json"), saved.model_dump(mode="json")
    from kiln.data.registry import found_by_root

    keys = (*DATA_CHOICE, "root") if found_by_root(data.name) else DATA_CHOICE
    if all(now.get(k) == before.get(k) for k in keys):
        return None
    return {k: now.get(k) for k in ("name", "root", "test_split") if now.get(k) is not None}


def _other_folder_is_all_test(cfg: Config, saved: Config, overrides: Sequence[str]) -> Config:
    """`kiln test RUN data.root=other/folder` on an image-folder run: every image there is a test image (`cfg`
    with data.test_split=all)."""
    if cfg.data.name != "image_folder" or cfg.data.root == saved.data.root:
        return cfg
    if any(o.replace(" ", "").startswith("data.test_split=") for o in overrides):
        return cfg
    log.info("testing on every image under %s (not the run's own folder). To test the held-out split of a moved "
             "copy of the training folder instead, add data.test_split=%s", cfg.data.root, saved.data.test_split)
    return cfg.with_values({"data.test_split": "all"})
