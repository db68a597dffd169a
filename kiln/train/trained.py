"""`load_trained`: the one way from a run folder to a model with its trained weights. `kiln test`, `predict`,
`inspect` and `report` all start here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from kiln.config import Config, ModelConfig
from kiln.core.checkpoint import Checkpoint
from kiln.data import DataInfo
from kiln.runs import RunDir
from kiln.tasks import Task


@dataclass
class Trained:
    run: RunDir
    cfg: Config
    model: torch.nn.Module  # in eval mode, on `device`, with the checkpoint's weights
    info: DataInfo  # the data the model was trained on, as saved in the checkpoint
    device: torch.device
    precision: str
    checkpoint: Path
    state: Checkpoint  # the checkpoint (loaded on the CPU)

    @cached_property
    def vocab(self) -> Any:  # a Vocab, a ModelTokenizer, or None (not text)
        return self.run.vocab()  # loaded once: a model tokenizer takes a moment

    @property
    def task(self) -> Task:
        from kiln.tasks import build_task

        return build_task(self.cfg.task, self.info.num_classes)


def load_trained(run: RunDir | Path | str, checkpoint: str = "best", overrides: Sequence[str] = (),
                 device: torch.device | str | None = None) -> Trained:
    """The run's model with the weights of `checkpoint` (best | last | a path), built from the saved config
    (plus `overrides`) on `device` (default: the config's trainer.device)."""
    from kiln.core.checkpoint import read_checkpoint
    from kiln.core.state import load_weights
    from kiln.models import prepare_model
    from kiln.train.device import resolve_device, resolve_precision, use_channels_last

    run = run if isinstance(run, RunDir) else RunDir.open(run)
    cfg = run.config(overrides)
    device = resolve_device(cfg.trainer.device) if device is None else torch.device(device)
    path = run.checkpoint(checkpoint)
    state = read_checkpoint(path)  # on the CPU: only the weights go to the device, copied into the model
    info = saved_data_info(state, path)
    model = prepare_model(model_config(run, cfg), info, device,
                          use_channels_last(cfg.trainer.channels_last, device, cfg.model.name))
    load_weights(model, state.model, path)
    return Trained(run, cfg, model.eval(), info, device, resolve_precision(cfg.trainer.precision, device), path,
                   state)


def model_config(run: RunDir, cfg: Config) -> ModelConfig:
    """The model section a run's model is rebuilt from. An hf: model's architecture is read from the config.json
    the run keeps beside its tokenizer, so the run does not need the original folder or the Hub cache again."""
    if cfg.model.name.startswith("hf:") and (run.tokenizer_dir / "config.json").is_file():
        return cfg.model.model_copy(update={"name": f"hf:{run.tokenizer_dir}"})
    return cfg.model


def saved_data_info(state: Checkpoint, path: Path) -> DataInfo:
    """What the model was trained on, as the checkpoint recorded it."""
    if not state.data_info:
        from kiln.core.errors import KilnError

        raise KilnError(f"{path} records no data_info (what the model was trained on): it was not written by "
                        "kiln train; use it as pretrained weights (model.pretrained) instead")
    raw = dict(state.data_info)
    raw["image_size"] = tuple(raw["image_size"])
    raw["stored_size"] = tuple(raw.get("stored_size", (0, 0)))
    for key in ("mean", "std"):  # one float for every channel before per-channel statistics
        raw[key] = tuple(raw[key]) if isinstance(raw.get(key), (list, tuple)) else (float(raw.get(key, 0.0)),)
    return DataInfo(**raw)
