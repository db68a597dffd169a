"""The root of the config: its sections and the checks that span several of them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    PrivateAttr,
    model_validator,
)

from kiln.config.data_sections import DataConfig
from kiln.config.sections import (
    LogConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    Section,
    TrainerConfig,
    better,
)
from kiln.config.task_sections import MulticlassTaskConfig, OwnTaskConfig, TaskConfig

log = logging.getLogger("kiln")


def _settle(section: Section, **values: Any) -> None:
    """Complete a section while the root is being validated: the one place a frozen section is written, before
    anyone else holds it. A value settled here is one the user could have written (a default that follows another
    section, a deprecated key moved to its new home)."""
    for name, value in values.items():
        object.__setattr__(section, name, value)
        section.model_fields_set.add(name)


class Config(Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    """Experiment name; runs go to <log.dir>/<name>/."""
    seed: int = 0
    """Seeds every random generator (python, numpy, torch, CUDA)."""
    code_dir: Path | None = None
    """A folder of your own code (relative to the config file) that kiln puts on the import path, so names such as
    `model.name: my_project.models:Net` resolve. Loading the config imports the modules it names from there."""
    task: TaskConfig = Field(default_factory=MulticlassTaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    # Set by loading when the file's on_device profile for this run's device was applied: the device type, and
    # the profile's values that ran (a command-line value wins over the profile). For the log and config.yaml.
    _device: str = PrivateAttr("")
    _on_device: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _known_model(self) -> "Config":
        """kiln's own model names and their model.args, from the models' source (no torch import), so `kiln config`
        reports them; a model of your own is checked when its code is imported (kiln.train.preflight)."""
        from kiln.core.model_names import check_kiln_model

        check_kiln_model(self.model.name, self.model.args)
        return self

    @model_validator(mode="after")
    def _weighted_sampler_balances_classes(self) -> "Config":
        if self.data.sampler == "weighted" and self.task.no_weighted_sampler:
            raise ValueError(f"data.sampler=weighted draws classes equally (multiclass); {self.task.no_weighted_sampler}")
        return self

    @model_validator(mode="after")
    def _label_smoothing_belongs_to_the_task(self) -> "Config":
        old = self.trainer.label_smoothing
        if old:
            if not isinstance(self.task, MulticlassTaskConfig):
                raise ValueError(f"trainer.label_smoothing (deprecated: task.label_smoothing) is a multiclass setting; "
                                 f"this task is {self.task.name} (task.name): remove it")
            if self.task.label_smoothing and self.task.label_smoothing != old:
                raise ValueError(f"trainer.label_smoothing={old} and task.label_smoothing="
                                 f"{self.task.label_smoothing} disagree; set task.label_smoothing only")
            log.warning("trainer.label_smoothing is deprecated: use task.label_smoothing=%g", old)
            _settle(self.task, label_smoothing=old)
            _settle(self.trainer, label_smoothing=0.0)
        return self

    @model_validator(mode="after")
    def _on_bad_row_belongs_to_the_data(self) -> "Config":
        text, data = self.data.text, self.data
        if "on_bad_row" in text.model_fields_set and text.on_bad_row != data.on_bad_row:
            if "on_bad_row" in data.model_fields_set:
                raise ValueError(f"data.text.on_bad_row={text.on_bad_row} and data.on_bad_row={data.on_bad_row} "
                                 "disagree; set data.on_bad_row only")
            log.warning("data.text.on_bad_row is deprecated: use data.on_bad_row=%s", text.on_bad_row)
            _settle(data, on_bad_row=text.on_bad_row)
        if text.on_bad_row != data.on_bad_row:
            _settle(text, on_bad_row=data.on_bad_row)  # the text readers see the one setting
        return self

    @model_validator(mode="after")
    def _tokenizer_follows_the_model(self) -> "Config":
        """auto -> the model's own tokenizer for an hf: encoder (its embeddings know only its ids), else kiln's."""
        text, encoder = self.data.text, self.model.name.startswith("hf:")
        if text.tokenizer == "auto":
            _settle(text, tokenizer="model" if encoder else "basic_english")
        if text.tokenizer == "model" and not encoder:
            raise ValueError(f"data.text.tokenizer=model uses an hf:NAME model's tokenizer; model.name="
                             f"{self.model.name} has none: use basic_english or whitespace")
        if encoder and text.tokenizer != "model":
            raise ValueError(f"model.name={self.model.name} reads its own tokenizer's ids: data.text.tokenizer="
                             f"{text.tokenizer} would feed it kiln's vocabulary; use data.text.tokenizer=model (or auto)")
        if text.tokenizer == "model":
            if text.collate != "pad":
                raise ValueError("an hf: model reads padded batches with an attention mask: data.text.collate=pad")
            vocabulary = [k for k in ("ngrams", "min_freq", "max_vocab")
                          if getattr(text, k) != type(text).model_fields[k].default]
            if vocabulary:
                raise ValueError(f"data.text.{', '.join(vocabulary)} shape kiln's own vocabulary; the model's "
                                 "tokenizer has its own: remove them")
        return self

    @model_validator(mode="after")
    def _schedule_needs_validation(self) -> "Config":
        plateau = ("reduce_on_plateau", "ReduceLROnPlateau", "torch.optim.lr_scheduler:ReduceLROnPlateau")
        if self.schedule.name in plateau and self.data.val_split == 0:
            raise ValueError(f"schedule.name={self.schedule.name} needs a validation split (data.val_split > 0)")
        return self


def with_default_monitors(cfg: Config, better_of: Callable[[str], str] | None = None) -> Config:
    """`cfg` with the monitors it leaves to kiln filled in, for the run plan (the config stays as written):
    best.pt follows the task's headline metric on validation, and each monitor's mode follows its metric
    (`better_of`: the task's own answer, kiln.tasks.Task.better; else min for losses and errors, max for the rest —
    which a task of your own may not follow, so its modes are left to the plan, which asks the task)."""
    checkpoint, stopping = cfg.trainer.checkpoint, cfg.trainer.early_stopping
    monitor = checkpoint.monitor or cfg.task.default_monitor
    values: dict[str, Any] = {}
    if checkpoint.monitor is None:
        values["trainer.checkpoint.monitor"] = monitor
    if better_of is None and isinstance(cfg.task, OwnTaskConfig):
        return cfg.with_values(values) if values else cfg
    better_of = better_of or better
    if checkpoint.mode is None:
        values["trainer.checkpoint.mode"] = better_of(monitor)
    if stopping.mode is None:
        values["trainer.early_stopping.mode"] = better_of(stopping.monitor)
    return cfg.with_values(values) if values else cfg


# --------------------------------------------------------------------------- loading
