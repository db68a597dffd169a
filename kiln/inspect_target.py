"""What `kiln inspect` looks at: a model (from a run or a config) and one batch of inputs for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln.config import load_config
from kiln.data import build_data
from kiln.errors import KilnError
from kiln.runs import RunDir


@dataclass
class Target:
    model: torch.nn.Module
    inputs: Any
    description: str
    input_description: str
    run_dir: Path | None


def load_target(path: Path, overrides: list[str], *, checkpoint: str, input: str | None, sample: int) -> Target:
    from kiln.models import build_model
    from kiln.trained import load_trained

    is_run = path.is_dir()
    if is_run and not RunDir(path).config_file.is_file():
        raise KilnError(f"{path} is neither a config file nor a kiln run folder (no config.yaml)")
    device = torch.device("cpu")
    trained = load_trained(path, checkpoint, overrides, device=device) if is_run else None
    cfg = trained.cfg if trained else load_config(path, overrides)
    vocab = trained.vocab if trained else None
    data = build_data(cfg.data, seed=cfg.seed, device=device, splits=("test",), vocab=vocab)
    if trained:
        model = trained.model
        description = f"{cfg.model.name} from {trained.checkpoint}"
    else:
        model = build_model(cfg.model, data.info)
        description = f"{cfg.model.name} (freshly initialised)"
        if cfg.model.pretrained:
            from kiln.models.pretrained import load_pretrained

            load_pretrained(model, cfg.model.pretrained, cfg.model.name, cfg.model.weights)
            description = f"{cfg.model.name} ({cfg.model.pretrained} weights)"
    if input is not None:
        inputs = _one_input(input, data, cfg, vocab)
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


def _one_input(value: str, data, cfg, vocab) -> Any:
    if data.info.kind == "text":
        from kiln.data.text import collate
        from kiln.data.vocab import encode_texts

        return collate(encode_texts([value], vocab or data.vocab, cfg.data.text), cfg.data.text.collate)
    from kiln.predict import _image_batch

    return _image_batch([Path(value)], data.info)
