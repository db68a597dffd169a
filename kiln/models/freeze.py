"""Freezing parameters for fine-tuning, and unfreezing them at a given epoch.

The trainable set is a pure function of the epoch, so resuming across an unfreeze boundary is exact.
Frozen BatchNorm layers stay in eval mode: their running statistics do not move either.
"""

from __future__ import annotations

import logging

from torch import nn

from kiln.core.errors import KilnError

HEAD_ATTR = "kiln_head"  # the name of the module a library model built for num_classes (kiln.models.hub, .hf)

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


def built_head(model: nn.Module, num_classes: int, arch: str) -> str:
    """The last Linear or Conv2d (SqueezeNet's classifier is a 1x1 convolution) with num_classes outputs."""
    heads = [name for name, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    if not heads:
        raise KilnError(f"cannot tell which layer of {arch} is its classifier; set model.head=PREFIX")
    return heads[-1]
