"""`build_data`: the requested splits of a configured dataset as batch sources, whatever the source."""

from __future__ import annotations

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.info import Data, DataRequest
from kiln.data.registry import get_dataset


def build_data(cfg: DataConfig, request: DataRequest) -> Data:
    """Load the requested splits of `cfg.name` and wrap each in a batch source for the request's device."""
    if ":" in cfg.name:  # the user's own Dataset class
        from kiln.data.user import build_user_data

        return build_user_data(cfg, request)
    spec = get_dataset(cfg.name)
    from kiln.tasks import TASKS

    task = request.task
    if not TASKS[task].class_per_sample and spec.name not in ("image_csv", "text_csv", "image_folder"):
        raise KilnError(f"task.name={task} reads its targets from an image CSV (data.name: image_csv), a text CSV "
                        f"(text_csv) or your own Dataset; {spec.name} has one class label per sample "
                        "(task.name: multiclass)")
    if spec.kind == "text":
        from kiln.data.text import build_text_data

        return build_text_data(spec, cfg, request)
    if spec.name in ("image_folder", "image_csv"):
        from kiln.data.images import build_file_image_data

        return build_file_image_data(spec, cfg, request)
    from kiln.data.images import build_image_data

    return build_image_data(spec, cfg, request)
