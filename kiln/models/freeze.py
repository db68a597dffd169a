"""Freezing parameters for fine-tuning, and unfreezing them at a given epoch.

The trainable set is a pure function of the epoch, so resuming across an unfreeze boundary is exact.
Frozen BatchNorm layers stay in eval mode: their running statistics do not move either.
"""

from __future__ import annotations

import logging

from torch import nn

from kiln.errors import KilnError
from kiln.models.hub import HEAD_ATTR

log = logging.getLogger("kiln")


def head_prefix(model: nn.Module, configured: str | None = None) -> str:
    """The classifier head's name prefix: configured, or the last Linear layer (e.g. `fc` in a ResNet)."""
    names = [n for n, _ in model.named_parameters()]
    if configured is not None:
        if not any(n == configured or n.startswith(configured + ".") for n in names):
            raise KilnError(f"model.head={configured!r} names no parameters; parameter names start with: "
                            f"{', '.join(sorted({n.split('.')[0] for n in names}))}")
        return configured
    built = getattr(model, HEAD_ATTR, None)  # a library model: the layer built for num_classes (kiln.models.hub)
    if isinstance(built, str):
        return built
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise KilnError("cannot tell this model's head (it has no Linear layer); set model.head=PREFIX")
    return linear[-1]


def matches(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)
