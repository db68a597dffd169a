"""`build_data`: the requested splits of a configured dataset as batch sources, whatever the source."""

from __future__ import annotations

from typing import Any

import torch

from kiln.config import DataConfig
from kiln.data.info import Data
from kiln.data.registry import get_dataset
from kiln.errors import KilnError


def build_data(cfg: DataConfig, *, seed: int, device: torch.device, splits: tuple[str, ...] = ("train", "val", "test"),
               channels_last: bool = False, overfit_batches: int = 0, rank: int = 0, world_size: int = 1,
               vocab: Any = None, task: str = "multiclass") -> Data:
    """Load the requested splits of `cfg.name` and wrap each in a batch source for `device`.

    `vocab` (text only): reuse a run's saved vocabulary instead of building one from the training split.
    `task` (task.name): how targets are read — class labels, label sets (multilabel) or numbers (regression).
    """
    if ":" in cfg.name:  # the user's own Dataset class
        from kiln.data.user import build_user_data

        return build_user_data(cfg, seed=seed, device=device, splits=splits, overfit_batches=overfit_batches,
                               rank=rank, world_size=world_size, task=task)
    spec = get_dataset(cfg.name)
    from kiln.tasks import TASKS

    if not TASKS[task].class_per_sample and spec.name not in ("image_csv", "text_csv", "image_folder"):
        raise KilnError(f"task.name={task} reads its targets from an image CSV (data.name: image_csv), a text CSV "
                        f"(text_csv) or your own Dataset; {spec.name} has one class label per sample "
                        "(task.name: multiclass)")
    common: dict[str, Any] = dict(seed=seed, device=device, splits=splits, overfit_batches=overfit_batches, rank=rank,
                  world_size=world_size, task=task)
    if spec.kind == "text":
        from kiln.data.text import build_text_data

        return build_text_data(spec, cfg, vocab=vocab, **common)
    if spec.name in ("image_folder", "image_csv"):
        from kiln.data.images import build_file_image_data

        return build_file_image_data(spec, cfg, channels_last=channels_last, **common)
    from kiln.data.images import build_image_data

    del common["task"]
    return build_image_data(spec, cfg, channels_last=channels_last, **common)
