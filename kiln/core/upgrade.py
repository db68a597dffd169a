"""The one upgrade chain for what older kilns saved: a run's config (config.yaml, a checkpoint's config) and a
checkpoint, each brought to today's layout as it is read. Plain data in, plain data out (no config types)."""

from __future__ import annotations

import copy
from typing import Any

# 1: the first format. 2: the config has a task section (label smoothing moved there from the trainer) and
# the running training metrics also sum the objective. Older checkpoints are converted when loaded.
FORMAT_VERSION = 2

# Format 2 wrote every task's settings (at their defaults) under every task; today each task has a schema of its
# own. The settings of format 2 and the task each belonged to, with their defaults then.
_FORMAT2_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    "multiclass": {"label_smoothing": 0.0, "class_weights": None},
    "multilabel": {"pos_weight": None, "threshold": 0.5, "tune_threshold": False},
    "regression": {"standardize": True, "target_mean": None, "target_std": None},
}


def upgrade_saved(raw: dict[str, Any]) -> dict[str, Any]:
    """A config that kiln itself saved (a run's config.yaml, a checkpoint's config) in an older layout, brought
    to today's without the deprecation warnings meant for config files people write."""
    raw = copy.deepcopy(raw)
    trainer, task = raw.get("trainer") or {}, raw.setdefault("task", {})
    if trainer.get("label_smoothing") and not task.get("label_smoothing"):  # format 1: the trainer owned it
        task["label_smoothing"] = trainer.pop("label_smoothing")
    name = task.get("name", "multiclass")
    for owner, defaults in _FORMAT2_TASK_SETTINGS.items():  # another task's settings, left at their defaults
        for key, default in defaults.items():
            if owner != name and key in task and task[key] == default:
                del task[key]
    data = raw.get("data") or {}
    augment = data.get("augment") or {}
    for key in ("hflip", "resized_crop"):  # unset once meant: on for photos (folders, CSVs), off for the rest
        if key in augment and augment[key] is None:
            augment[key] = data.get("name") in ("image_folder", "image_csv")
    return raw


def upgrade_checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """Bring an older checkpoint to FORMAT_VERSION (the running sums convert themselves when loaded)."""
    if payload.get("format", 1) < 2 and isinstance(payload.get("config"), dict):
        payload["config"] = upgrade_saved(payload["config"])
    payload["format"] = FORMAT_VERSION
    return payload
