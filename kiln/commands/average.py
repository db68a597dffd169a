"""`kiln average`: the weights of several epochs of a run averaged into one checkpoint (as stochastic weight
averaging does, after the fact), which test, predict and export take like any other (`--checkpoint averaged`).

The epochs are the run's kept epoch checkpoints (trainer.checkpoint.keep_last_k / keep_top_k). BatchNorm's running
statistics of averaged weights are not the average of the epochs' statistics, so they are measured again with one
pass over the training split (as torch.optim.swa_utils.update_bn does)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.config import watched
from kiln.core.errors import KilnError
from kiln.runs import RunDir

log = logging.getLogger("kiln")


def average_run(run_dir: Path | str, *, last: int | None = None, top_k: int | None = None, out: Path | None = None,
                bn_update: bool = True) -> Path:
    """The averaged checkpoint of `run_dir`'s last `last` (or best `top_k`) epoch checkpoints, written to `out`
    (default: the run's checkpoints/averaged.pt); returns its path."""
    from kiln.core.checkpoint import read_checkpoint

    run = RunDir.open(run_dir)
    chosen = chosen_epochs(run, last, top_k)
    states = [read_checkpoint(path) for path in chosen]
    averaged = replace(states[-1], model=average_weights([s.model for s in states]), raw_model=None, ema=None,
                       optimizer=None, schedule=None, scaler=None, running=None, rng=None, rng_ranks=None)
    if bn_update:
        averaged = replace(averaged, model=_with_batchnorm_measured(run, averaged.model))
    out = out or run.checkpoint_path("averaged")
    averaged.save(out)
    log.info("averaged %s of %s into %s", ", ".join(p.name for p in chosen), run, out)
    return out


def chosen_epochs(run: RunDir, last: int | None, top_k: int | None) -> list[Path]:
    """The epoch checkpoints to average: the `last` latest, or the `top_k` best by the run's monitored metric."""
    if (last is None) == (top_k is None):
        raise KilnError("say which epochs to average: --last K (the K latest kept epochs) or --top-k K (the K best)")
    kept = {RunDir.epoch_of(p): p for p in run.epoch_checkpoints()}
    want = last or top_k or 0
    if want < 1 or len(kept) < want:
        have = ", ".join(p.name for p in kept.values()) or "none"
        key = "keep_last_k" if last else "keep_top_k"
        raise KilnError(f"{run} keeps {len(kept)} epoch checkpoints ({have}); averaging {want} needs {want}: train "
                        f"with trainer.checkpoint.{key}={max(want, 2)}")
    if last:
        return [kept[e] for e in sorted(kept)[-last:]]
    monitor, mode = watched(run.config().trainer.checkpoint)
    scores = {row["epoch"]: row[monitor] for row in run.metrics() if monitor in row and row.get("epoch") in kept}
    if missing := sorted(set(kept) - set(scores)):
        raise KilnError(f"metrics.jsonl of {run} has no {monitor} for epochs {missing}: average with --last instead")
    ranked = sorted(scores, key=lambda e: scores[e], reverse=mode == "max")[:want]
    return [kept[e] for e in sorted(ranked)]


def average_weights(weights: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each floating-point tensor (in fp64, stored in its own dtype); counters and other integer
    tensors (BatchNorm's num_batches_tracked) are the last epoch's."""
    out = {}
    for key, value in weights[-1].items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            out[key] = (sum(w[key].double() for w in weights) / len(weights)).to(value.dtype)
        else:
            out[key] = value
    return out


def _with_batchnorm_measured(run: RunDir, weights: dict[str, Any]) -> dict[str, Any]:
    """`weights` with BatchNorm's running statistics measured afresh over the training split (unchanged when the
    model has no BatchNorm)."""
    from kiln.core.state import load_weights, unwrap
    from kiln.models import prepare_model
    from kiln.train.device import autocast
    from kiln.train.trained import load_trained

    trained = load_trained(run, "last")
    model = prepare_model(trained.cfg.model, trained.info, trained.device, trained.plan().channels_last)
    load_weights(model, weights, "the averaged weights")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return weights
    momenta = {m: m.momentum for m in norms}
    for m in norms:  # a cumulative average over the pass, from nothing
        m.reset_running_stats()
        m.momentum = None
    task, data = trained.task, trained.plan().data(("train",), vocab=trained.vocab)
    model.train()
    with torch.no_grad():
        for inputs, targets in data.require("train").epoch(0):
            with autocast(trained.device, trained.precision):  # called as training calls it (a detector: with targets)
                task.outputs(model, inputs, targets)
    for m, momentum in momenta.items():
        m.momentum = momentum
    log.info("BatchNorm statistics of the averaged weights measured over the training split (%d layers)", len(norms))
    return {k: v.cpu() for k, v in unwrap(model).state_dict().items()}
