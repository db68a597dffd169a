"""The typed config: one model per section, loading, `base:` merging, overrides.

Every field has a docstring; they become the descriptions in `kiln schema`.
A config is plain data: it creates no folders and is never pickled into a
checkpoint (checkpoints hold `Config.model_dump()`).

`sections`, `data_sections` and `task_sections` hold the sections, `root` the `Config` that joins them, `files` reading, merging
and saving config files, `describe` the schema and the error messages.
"""

import sys
import types
from typing import Any

from kiln.config.data_sections import (
    AugmentConfig,
    CvConfig,
    DataConfig,
    TextConfig,
    TransformsConfig,
)
from kiln.config.describe import explain, json_schema, schema_markdown
from kiln.config.files import (
    ALTERNATIVES,
    DERIVED,
    DeviceProfile,
    build_config,
    deep_merge,
    flatten,
    load_config,
    nest,
    override_strings,
    parse_overrides,
    profile_summary,
    read_file,
    read_on_this_device,
    recorded_derivations,
    resolve_config,
    resolved_values,
    to_yaml,
    with_command_line,
)
from kiln.config.root import Config, with_default_monitors
from kiln.config.sections import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LOWER_IS_BETTER,
    CheckpointConfig,
    EarlyStoppingConfig,
    EmaConfig,
    LogConfig,
    MlflowConfig,
    ModelConfig,
    OptimConfig,
    ProfileConfig,
    ScheduleConfig,
    Section,
    TrainerConfig,
    WandbConfig,
    better,
    watched,
)
from kiln.config.task_sections import (
    TASK_CONFIGS,
    TASK_LOSSES,
    DetectionTaskConfig,
    DistillConfig,
    MulticlassTaskConfig,
    MultiheadTaskConfig,
    MultilabelTaskConfig,
    OwnTaskConfig,
    RegressionTaskConfig,
    SegmentationTaskConfig,
    TaskConfig,
    task_config,
)

__all__ = [
    "ALTERNATIVES",
    "DERIVED",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOWER_IS_BETTER",
    "TASK_CONFIGS",
    "TASK_LOSSES",
    "AugmentConfig",
    "CheckpointConfig",
    "Config",
    "CvConfig",
    "DataConfig",
    "DetectionTaskConfig",
    "DeviceProfile",
    "DistillConfig",
    "EarlyStoppingConfig",
    "EmaConfig",
    "LogConfig",
    "MlflowConfig",
    "ModelConfig",
    "MulticlassTaskConfig",
    "MultiheadTaskConfig",
    "MultilabelTaskConfig",
    "OptimConfig",
    "OwnTaskConfig",
    "ProfileConfig",
    "RegressionTaskConfig",
    "ScheduleConfig",
    "Section",
    "SegmentationTaskConfig",
    "TaskConfig",
    "TextConfig",
    "TrainerConfig",
    "TransformsConfig",
    "WandbConfig",
    "better",
    "build_config",
    "deep_merge",
    "explain",
    "flatten",
    "json_schema",
    "load_config",
    "nest",
    "override_strings",
    "parse_overrides",
    "profile_summary",
    "read_file",
    "read_on_this_device",
    "recorded_derivations",
    "resolve_config",
    "resolved_values",
    "schema_markdown",
    "task_config",
    "to_yaml",
    "watched",
    "with_command_line",
    "with_default_monitors",
]


class _CallableConfigModule(types.ModuleType):
    """`kiln.config(...)` from Python is `resolve_config` (the package keeps its own name: `kiln.config` is both)."""

    def __call__(self, config: Any, *overrides: Any) -> Config:
        return resolve_config(config, *overrides)


sys.modules[__name__].__class__ = _CallableConfigModule
