"""Models: `build_model(cfg.model, data.info)` is the one entry point."""

from __future__ import annotations

import torch
from torch import nn

from kiln.config import ModelConfig
from kiln.core.errors import KilnError
from kiln.data.inputs import inputs_of
from kiln.models import detection, segmentation, text, vision  # noqa: F401  (registers the built-in models)
from kiln.models.registry import MODELS, construct, register_model

__all__ = ["MODELS", "build_model", "describe", "prepare_model", "register_model"]


def build_model(cfg: ModelConfig, info) -> nn.Module:
    """Build the configured model for data described by `info` (a `kiln.data.DataInfo`)."""
    from kiln.models.hub import VISION_LIBRARIES, check_input, library_of

    library = library_of(cfg.name)
    if library in VISION_LIBRARIES and not info.in_channels:
        raise KilnError(f"model.name={cfg.name} is an image classifier; data {info.name!r} is not images (for text "
                        "use embedding_bag, gru, transformer or an hf:NAME encoder)")
    if library == "hf" and not inputs_of(info).reads_text:
        raise KilnError(f"model.name={cfg.name} is a text encoder; data {info.name!r} is not text (text_csv, "
                        "ag_news)")
    data_args = inputs_of(info).model_args(info) | ({"download": cfg.download} if library in ("hf", "smp") else {})
    model = construct(cfg.name, cfg.args, data_args)
    if library in VISION_LIBRARIES:
        check_input(model, cfg.name, info.in_channels, info.image_size)
    return model


def prepare_model(cfg: ModelConfig, info, device: torch.device, channels_last: bool,
                  pretrained: bool = False) -> nn.Module:
    """The model as training uses it: built, optionally with `cfg.pretrained` weights, on `device`, and with
    channels_last memory for conv nets."""
    model = build_model(cfg, info)
    if pretrained and cfg.pretrained:
        from kiln.models.pretrained import load_pretrained

        load_pretrained(model, cfg)
    model = model.to(device)
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def describe(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    return f"{type(model).__name__}: {total:,} parameters ({trainable:,} trainable), {size / 2**20:.2f} MiB"
