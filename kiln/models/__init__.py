"""Models: `build_model(cfg.model, data.info)` is the one entry point."""

from __future__ import annotations

from torch import nn

from kiln.config import ModelConfig
from kiln.models import text, vision  # noqa: F401  (registers the built-in models)
from kiln.models.registry import MODELS, construct, register_model

__all__ = ["MODELS", "build_model", "register_model", "describe"]


def build_model(cfg: ModelConfig, info) -> nn.Module:
    """Build the configured model for data described by `info` (a `kiln.data.DataInfo`)."""
    return construct(cfg.name, cfg.args, info.model_args())


def describe(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    return f"{type(model).__name__}: {total:,} parameters ({trainable:,} trainable), {size / 2**20:.2f} MiB"
