"""`load_trained`: the one way from a run folder to a model with its trained weights. `kiln test`, `predict`,
`inspect` and `report` all start here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kiln.config import Config, ModelConfig
from kiln.core.checkpoint import Checkpoint
from kiln.data import Data, DataInfo
from kiln.runs import RunDir
from kiln.tasks import Task

if TYPE_CHECKING:
    from kiln.train.plan import RunPlan


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

    def plan(self, device: torch.device | None = None) -> RunPlan:
        """The run's plan on `device` (default: the model's), for one process: its data (`plan.data`) is split by
        the run's seed and encoded as in training."""
        from kiln.core.dist import ProcessInfo
        from kiln.train.plan import RunPlan

        return RunPlan.of(self.cfg, device or self.device, ProcessInfo())

    def test_data(self, device: torch.device | None = None) -> Data:
        """The run's test split (as `kiln test` scores it) on `device` (default: the model's), read with the run's
        vocabulary."""
        return self.plan(device).data(("test",), vocab=self.vocab)

    def provenance(self) -> str:
        """Which weights these are: `best.pt of RUN (after epoch 4 of 10)`."""
        loop = self.state.loop
        done = f"after epoch {loop.epoch} of {self.cfg.trainer.epochs}" if loop.epoch else "before its first epoch ended"
        return f"{self.checkpoint.name} of {self.run} ({done})"

    def unfinished(self) -> str | None:
        """Why these weights may not be the run's final ones — it is still training, or stopped before its last
        epoch — or None: the run finished (or its status is unknown)."""
        from kiln.runs import RunLock, RunStatus

        state, weights = self.run.state(), f"these predictions come from {self.provenance()}"
        resume = f"resume it with: kiln train --resume {self.run}"
        if state is RunStatus.RUNNING:
            holder = RunLock(self.run).holder()
            if holder is not None:
                return f"the run is still training ({holder}): {weights}, not from the finished model"
            return f"the run ended without finishing (the process was killed): {weights}; {resume}"
        if state in (RunStatus.INTERRUPTED, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.PRUNED):
            why = {RunStatus.INTERRUPTED: "was interrupted", RunStatus.STOPPED: "was stopped (NaN or out of memory)",
                   RunStatus.FAILED: "failed", RunStatus.PRUNED: "was pruned by its search"}[state]
            return f"the run {why} before its last epoch: {weights}" + (
                f"; {resume}" if state is RunStatus.INTERRUPTED else "")
        return None

    @property
    def task(self) -> Task:
        from kiln.tasks import build_task

        return build_task(self.cfg.task, self.info.num_classes)


def load_trained(run: RunDir | Path | str, checkpoint: str = "best", overrides: Sequence[str] = (),
                 device: torch.device | str | None = None) -> Trained:
    """The run's model with the weights of `checkpoint` (best | last | a path), built from the saved config
    (plus `overrides`) on `device` (default: the config's trainer.device)."""
    from kiln.core.checkpoint import read_checkpoint
    from kiln.core.dist import ProcessInfo
    from kiln.core.state import load_weights
    from kiln.models import prepare_model
    from kiln.train.plan import RunPlan

    run = run if isinstance(run, RunDir) else RunDir.open(run)
    cfg = run.config(overrides)
    plan = RunPlan.of(cfg, device, ProcessInfo())  # device None: the config's, resolved by the plan
    path = run.checkpoint(checkpoint)
    state = read_checkpoint(path)  # on the CPU: only the weights go to the device, copied into the model
    info = saved_data_info(state, path)
    model = prepare_model(model_config(run, cfg), info, plan.device, plan.channels_last)
    load_weights(model, state.model, path)
    return Trained(run, plan.config, model.eval(), info, plan.device, plan.precision, path, state)


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
    raw["output_ids"] = tuple(raw.get("output_ids", ()))
    for key in ("mean", "std"):  # one float for every channel before per-channel statistics
        raw[key] = tuple(raw[key]) if isinstance(raw.get(key), (list, tuple)) else (float(raw.get(key, 0.0)),)
    return DataInfo(**raw)
