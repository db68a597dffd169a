"""Evaluating a trained model on the test split: `kiln test`, and the test at the end of `kiln train`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from kiln.data import Data, build_data
from kiln.runs import RunDir
from kiln.train.loop import evaluate

log = logging.getLogger("kiln")


def run_evaluation(model: torch.nn.Module, data: Data, task_cfg, checkpoint: Path, epoch: int,
                   device: torch.device, precision: str, run: RunDir | None, limit: int | None = None
                   ) -> dict[str, Any]:
    """Evaluate on the test split and write test_metrics.json into `run` (None: write nothing)."""
    from kiln.tasks import build_task

    task = build_task(task_cfg, data.info.num_classes)
    raw = evaluate(model, data.require("test"), task, device=device, precision=precision, limit=limit, detailed=True)
    results = {"checkpoint": str(checkpoint), "epoch": epoch, "task": task.name,
               **task.test_results(raw, data.info.class_names)}
    if run is None:
        return results
    run.write_test_metrics(results)
    log.info("test: %s  (%s)", task.describe(results), Path(checkpoint).name)
    return results


@torch.no_grad()
def collect_predictions(model: torch.nn.Module, batches, task, device: torch.device, precision: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's predictions (class or label probabilities, values in original units) and the targets of every
    sample of `batches`, in order, on the CPU."""
    from kiln.train.device import autocast
    from kiln.train.step import forward

    predictions, targets = [], []
    for inputs, y in batches.epoch(0):
        with autocast(device, precision):
            predictions.append(task.predictions(task.logits(forward(model, inputs))).float().cpu())
        targets.append(y.cpu())
    return torch.cat(predictions), torch.cat(targets)


def run_test(run_dir: Path | str, *, checkpoint: str = "best", overrides: list[str] | tuple[str, ...] = ()
             ) -> dict[str, Any]:
    """`kiln test`: evaluate a trained run's checkpoint on the test split; writes test_metrics.json."""
    from kiln.train.device import use_channels_last
    from kiln.trained import load_trained

    trained = load_trained(run_dir, checkpoint, overrides)
    cfg, device = trained.cfg, trained.device
    _other_folder_is_all_test(cfg, trained.run.config(), overrides)
    data = build_data(cfg.data, task=cfg.task.name, seed=cfg.seed, device=device, splits=("test",),
                      channels_last=use_channels_last(cfg.trainer.channels_last, device, cfg.model.name), vocab=trained.vocab)
    limit = 2 if cfg.trainer.fast_dev_run else None
    return run_evaluation(trained.model, data, cfg.task, trained.checkpoint, trained.state["loop"]["epoch"],
                          device, trained.precision, trained.run, limit)


def _other_folder_is_all_test(cfg, saved, overrides) -> None:
    """`kiln test RUN data.root=other/folder` on an image-folder run: every image there is a test image."""
    if cfg.data.name != "image_folder" or cfg.data.root == saved.data.root:
        return
    if any(o.replace(" ", "").startswith("data.test_split=") for o in overrides):
        return
    cfg.data.test_split = "all"
    log.info("testing on every image under %s (not the run's own folder). To test the held-out split of a moved "
             "copy of the training folder instead, add data.test_split=%s", cfg.data.root, saved.data.test_split)
