"""`build_data`: the requested splits of a configured dataset as batch sources, whatever the source."""

from __future__ import annotations

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.core.user_code import names_code
from kiln.data.info import Data, DataRequest
from kiln.data.registry import get_dataset


def build_data(cfg: DataConfig, request: DataRequest) -> Data:
    """Load the requested splits of `cfg.name` and wrap each in a batch source for the request's device."""
    if names_code(cfg.name):  # the user's own Dataset class
        from kiln.data.user import build_user_data

        return build_user_data(cfg, request)
    spec = get_dataset(cfg.name)
    from kiln.tasks import task_class

    if not task_class(request.task).class_per_sample and not spec.own_files:
        raise KilnError(f"task.name={request.task} reads its targets from {task_class(request.task).sources}; "
                        f"{spec.name} has one class label per sample (task.name: multiclass)")
    return spec.build(cfg, request)
