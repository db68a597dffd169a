"""`build_data`: the requested splits of a configured dataset as batch sources, whatever the source."""

from __future__ import annotations

import importlib

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.info import Data, DataRequest
from kiln.data.registry import get_dataset

# The builder of each kind of registered source, by its spec's `builder` (kiln.data.registry), imported when first
# used (each pulls in its own readers). A new kind of source is a builder module and one entry here; a new dataset
# of a known kind is one `register(...)` call. Every builder finds its samples (pools), plans the splits and hands
# a Source to kiln.data.assemble.assemble, which makes the Data.
BUILDERS = {"images": "kiln.data.images:build_image_data", "image_files": "kiln.data.images:build_file_image_data",
            "text": "kiln.data.text:build_text_data"}


def build_data(cfg: DataConfig, request: DataRequest) -> Data:
    """Load the requested splits of `cfg.name` and wrap each in a batch source for the request's device."""
    if ":" in cfg.name:  # the user's own Dataset class
        from kiln.data.user import build_user_data

        return build_user_data(cfg, request)
    spec = get_dataset(cfg.name)
    from kiln.tasks import TASKS

    if not TASKS[request.task].class_per_sample and not spec.own_files:
        raise KilnError(f"task.name={request.task} reads its targets from an image CSV (data.name: image_csv), a "
                        f"text CSV (text_csv) or your own Dataset; {spec.name} has one class label per sample "
                        "(task.name: multiclass)")
    module, _, function = BUILDERS[spec.builder].partition(":")
    build = getattr(importlib.import_module(module), function)
    return build(spec, cfg, request)
