"""Evaluating a trained model on the test split: `kiln test`, and the test at the end of `kiln train`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from kiln.config import Config, DataConfig
from kiln.core.dist import ProcessInfo
from kiln.core.errors import KilnError
from kiln.core.formats import TestResults
from kiln.data import Data
from kiln.data.loaders import Batches
from kiln.tasks import Task
from kiln.train.loop import TestDetail, evaluate
from kiln.train.plan import RunPlan
from kiln.train.trained import Trained

log = logging.getLogger("kiln")


def run_evaluation(trained: Trained, data: Data, *, write: bool = True, limit: int | None = None,
                   out: Path | None = None, scored: dict[str, Any] | None = None, tta: str | None = None
                   ) -> TestResults:
    """Evaluate `trained` on the test split and write test_metrics.json into its run (`write` false: write
    nothing, e.g. on the ranks other than 0), or `out` when the data scored is not the run's own (`scored`: which
    data it was, recorded in the results). On the run's own whole test split in one process, the predictions are
    kept too (test_predictions.pt, under the checkpoint's checksum), so `kiln report` shows the mistakes without
    predicting again. `tta`: the test-time views averaged (`--tta`), recorded in the results."""
    from kiln.core import dist
    from kiln.tasks import build_task
    from kiln.train.ensemble import with_views

    device, precision, checkpoint = trained.device, trained.precision, trained.checkpoint
    model = with_views(trained.model, trained.task, tta)
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
                                 **({"data": scored} if scored else {}), **({"tta": tta} if tta else {}),
                                 **task.test_results(raw, data.info.class_names)})
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
DATA_CHOICE = ("name", "args", "test_args", "test_split", "classes", "files", "urls")


def run_test(run_dir: Path | str | Sequence[Path | str], *, checkpoint: str = "best",
             overrides: list[str] | tuple[str, ...] = (), out: Path | None = None, tta: str | None = None,
             weights: Sequence[float] | None = None) -> TestResults:
    """`kiln test`: evaluate a trained run's checkpoint on its test split, written to test_metrics.json. On other
    data (data.root=..., another test split) the results go to their own file — `out`, or
    test_metrics-<data>.json in the run folder — and say which data was scored; the run's own stay untouched. With
    `tta` the model's answers are averaged over test-time views (test_metrics-tta-<views>.json); several runs (or a
    `kiln cv` folder) are scored as an ensemble (`test_ensemble`)."""
    from kiln.train.ensemble import expand_runs
    from kiln.train.trained import load_trained

    runs = expand_runs([run_dir] if isinstance(run_dir, (str, Path)) else run_dir)
    if len(runs) > 1:
        return test_ensemble(runs, checkpoint=checkpoint, overrides=overrides, out=out, tta=tta, weights=weights)
    trained = load_trained(runs[0], checkpoint, overrides)
    data, scored = _scored_data(trained, overrides)
    if out is None and (scored is not None or tta):
        labels = [Path(str(scored.get("root") or "")).name or str(scored["name"])] if scored else []
        out = trained.run.other_test_metrics_file("-".join(labels + ([f"tta-{tta}"] if tta else [])))
    limit = 2 if trained.cfg.trainer.fast_dev_run else None
    return run_evaluation(trained, data, limit=limit, out=out, scored=scored, tta=tta)


def _scored_data(trained: Trained, overrides: Sequence[str]) -> tuple[Data, dict[str, Any] | None]:
    """The test split a run is scored on (its own, or the other data the overrides name, then described)."""
    saved = trained.run.config()
    cfg = _other_folder_is_all_test(trained.cfg, saved, overrides)
    data = RunPlan.of(cfg, trained.device, ProcessInfo()).data(("test",), vocab=trained.vocab)
    return data, other_data(cfg.data, saved.data)


def test_ensemble(runs: Sequence[Path], *, checkpoint: str = "best", overrides: Sequence[str] = (),
                  out: Path | None = None, tta: str | None = None, weights: Sequence[float] | None = None
                  ) -> TestResults:
    """Several runs scored as one model: each reads the test split as it was trained to (its own image size,
    normalisation, vocabulary) and the task averages their answers (class probabilities, label probabilities,
    values; `weights` in the runs' order, default equal). The results (with each member) go to `out`, default
    test_metrics-ensemble.json in the first run's folder."""
    from kiln.train.ensemble import averaged_outputs, weights_of, with_views
    from kiln.train.loop import model_outputs, score
    from kiln.train.trained import load_trained

    members = [load_trained(run, checkpoint, overrides) for run in runs]
    shares = weights_of(weights, len(members))
    task = _common_task(members)
    outputs, targets, scored = [], None, None
    for trained in members:
        data, scored = _scored_data(trained, overrides)
        model = with_views(trained.model, trained.task, tta)
        pairs = list(model_outputs(model, data.require("test"), trained.task, trained.device, trained.precision))
        outputs.append(torch.cat([o.cpu() for o, _ in pairs]))
        these = _joined_targets([t for _, t in pairs], trained)
        if targets is not None and not torch.equal(these, targets):
            raise KilnError(f"{trained.run} reads other test samples (or another order) than {members[0].run}: an "
                            "ensemble is scored on one test split. Test runs of the same data and data.seed")
        targets = these
    assert targets is not None
    combined, size = averaged_outputs(task, outputs, shares), members[0].cfg.data.eval_batch_size or 256
    raw = score(((combined[i:i + size], targets[i:i + size]) for i in range(0, len(targets), size)), task,
                torch.device("cpu"), TestDetail())
    results = cast(TestResults, {
        "checkpoint": f"ensemble of {len(members)} runs ({checkpoint})", "epoch": min(m.state.loop.epoch for m in members),
        "task": task.name, **({"data": scored} if scored else {}), **({"tta": tta} if tta else {}),
        "ensemble": [{"run": str(m.run.path), "checkpoint": str(m.checkpoint), "epoch": m.state.loop.epoch,
                      "weight": w} for m, w in zip(members, shares)],
        **task.test_results(raw, members[0].info.class_names)})
    results["file"] = str(members[0].run.write_test_metrics(
        results, out or members[0].run.other_test_metrics_file("ensemble" + (f"-tta-{tta}" if tta else ""))))
    log.info("test (ensemble of %d): %s", len(members), task.describe(results))
    return results


def _common_task(members: Sequence[Trained]) -> Task:
    """The task the members share: the same task, outputs and output names, or a clear error."""
    first = members[0]
    for other in members[1:]:
        if other.cfg.task.name != first.cfg.task.name or other.info.class_names != first.info.class_names:
            raise KilnError(f"{other.run} ({other.cfg.task.name}: {', '.join(other.info.class_names[:5])}...) does "
                            f"not answer the same question as {first.run} ({first.cfg.task.name}: "
                            f"{', '.join(first.info.class_names[:5])}...): an ensemble averages runs of one task "
                            "over the same classes, labels or targets, in the same order")
    return first.task


def _joined_targets(targets: list[Any], trained: Trained) -> torch.Tensor:
    if not all(isinstance(t, torch.Tensor) for t in targets):
        raise KilnError(f"{trained.run}: its test targets are not tensors, which an ensemble test needs to match "
                        "the runs' samples; test its runs one by one")
    return torch.cat([t.cpu() for t in targets])


def other_data(data: DataConfig, saved: DataConfig) -> dict[str, Any] | None:
    """Which data is scored, when it is not the run's own test split (None when it is)."""
    now, before = data.model_dump(mode="json"), saved.model_dump(mode="json")
    from kiln.data.registry import found_by_root

    keys = (*DATA_CHOICE, "root") if found_by_root(data.name) else DATA_CHOICE
    if all(now.get(k) == before.get(k) for k in keys):
        return None
    return {k: now.get(k) for k in ("name", "root", "files", "urls", "test_split") if now.get(k) is not None}


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
