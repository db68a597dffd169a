"""What `kiln inspect` looks at: a model (from a run or a config) and one batch of inputs for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln.config import load_config
from kiln.core.dist import ProcessInfo
from kiln.core.errors import KilnError
from kiln.data import fresh_encoder
from kiln.data.inputs import inputs_of
from kiln.runs import RunDir
from kiln.train.plan import RunPlan


@dataclass
class Target:
    model: torch.nn.Module
    inputs: Any
    description: str
    input_description: str
    run_dir: Path | None


def load_target(path: Path, overrides: list[str], *, checkpoint: str, input: str | None, sample: int) -> Target:
    from kiln.models import build_model
    from kiln.train.trained import load_trained

    is_run = path.is_dir()
    if is_run and not RunDir(path).is_run:
        raise KilnError(f"{path} is neither a config file nor a kiln run folder (no config.yaml)")
    device = torch.device("cpu")
    trained = load_trained(path, checkpoint, overrides, device=device) if is_run else None
    cfg = trained.cfg if trained else load_config(path, overrides)
    vocab = trained.vocab if trained else fresh_encoder(cfg)
    data = RunPlan.of(cfg, device, ProcessInfo()).data(("test",), vocab=vocab)
    if trained:
        model = trained.model
        description = f"{cfg.model.name} from {trained.checkpoint}"
    else:
        model = build_model(cfg.model, data.info)
        description = f"{cfg.model.name} (freshly initialised)"
        if cfg.model.pretrained:
            from kiln.models.pretrained import load_pretrained

            load_pretrained(model, cfg.model)
            description = f"{cfg.model.name} ({cfg.model.pretrained} weights)"
    if input is not None:
        inputs = inputs_of(data.info).one(input, data.info, cfg, vocab if vocab is not None else data.vocab)
        input_description = input
    else:
        batch, _ = next(iter(data.require("test").epoch(0)))
        inputs = _first(batch, sample)
        input_description = f"the first {sample} test sample(s)"
    return Target(model, inputs, description, input_description, path if is_run else None)


def _first(batch: Any, n: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):  # your own Dataset's inputs: the first n of each
        return {k: _first(v, n) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_first(v, n) for v in batch)
    from kiln.data.text import offsets_collate, pad_collate

    if batch.offsets is not None:  # rebuild the first n sequences from the flat ids
        ends = (batch.offsets + batch.lengths)[:n].tolist()
        seqs = [batch.ids[s:e] for s, e in zip(batch.offsets[:n].tolist(), ends)]
        return offsets_collate(seqs)
    seqs = [batch.ids[i, :batch.lengths[i]] for i in range(min(n, len(batch)))]
    return pad_collate(seqs, 0)


@dataclass
class BatchView:
    """One batch exactly as the model receives it, described for people."""

    lines: list[str]
    figure_path: Path | None


def show_batch(path: Path, overrides: list[str], split: str, out: Path | None, limit: int = 36) -> BatchView:
    """`kiln inspect --batch`: the first batch of `split` of a run's or a config's data, as `batch_view` shows it;
    the grid is written to `out` (default RUN_DIR/inspect or ./inspect)."""
    from kiln.viz.style import save

    run = RunDir.open(path) if path.is_dir() else None
    cfg = run.config(overrides) if run else load_config(path, overrides)
    lines, fig = batch_view(cfg, split, run.vocab() if run else None, limit)
    if fig is None:
        return BatchView(lines, None)
    folder = out or (path / "inspect" if run else Path("inspect"))
    return BatchView(lines, save(fig, folder / f"batch_{split}")[0])


def batch_view(cfg, split: str, vocab=None, limit: int = 36) -> tuple[list[str], Any]:
    """The first batch of `split` after decoding, resizing, augmentation (epoch 1's draw for train) and
    normalisation: a figure of it de-normalised for display (None for text, shown as decoded rows in the lines),
    with labels, and lines giving its per-channel statistics and the split's class counts."""
    from kiln.data.loaders import split_labels
    from kiln.tasks import task_class
    from kiln.viz import figures

    data = RunPlan.of(cfg, torch.device("cpu"), ProcessInfo()).data(
        (split,), vocab=vocab if vocab is not None else fresh_encoder(cfg))
    if getattr(data, split) is None:
        raise KilnError(f"the data has no {split} split (choose --split train, val or test)")
    batches = data.require(split)
    x, y = next(iter(batches.epoch(0)))
    names = data.info.class_names
    lines = [f"{split} batch of {len(y)} ({data.sizes.get(split, 0):,} samples in the split)"]
    labels = split_labels(batches)
    task = cfg.task.name
    if labels is not None and names:
        lines.append(task_class(task).split_summary(labels, names))
    shown = inputs_of(data.info).shown_batch(x, data.info)
    if shown is None:  # texts, shown as decoded rows
        return lines + _text_rows(x, y, names, data.vocab or vocab, task), None
    flat = x.float().transpose(0, 1).reshape(x.shape[1], -1)
    lines.append("per channel, as the model sees it: mean " + ", ".join(f"{v:.3f}" for v in flat.mean(1).tolist())
                 + " | std " + ", ".join(f"{v:.3f}" for v in flat.std(1).tolist()))
    titles = [task_class(task).target_text(t, names) for t in y[:limit]]
    shown = task_class(task).overlay(shown[:limit], y[:limit], len(names))  # masks, boxes: drawn on the images
    fig = figures.image_grid(shown, titles,
                             f"The first {split} batch as the model receives it ({x.shape[1]}x{x.shape[2]}x{x.shape[3]})")
    return lines, fig


def _text_rows(x, y, names: list[str], vocab, task: str = "multiclass", rows: int = 4) -> list[str]:
    """A few rows of a text batch, decoded back into tokens (and how much padding each row got)."""
    from kiln.tasks import task_class

    if vocab is None or not hasattr(x, "ids"):
        return ["(inputs are not images or texts kiln can show)"]
    out = []
    for i in range(min(rows, len(y))):
        if x.offsets is not None:
            start = int(x.offsets[i])
            ids = x.ids[start:start + int(x.lengths[i])].tolist()
        else:
            ids = x.ids[i, :int(x.lengths[i])].tolist()
        padding = x.ids.shape[1] - len(ids) if x.offsets is None else 0
        out.append(f"[{task_class(task).target_text(y[i], names)}] " + " ".join(vocab.tokens(ids))
                   + (f"  (+{padding} padding)" if padding else ""))
    return out
