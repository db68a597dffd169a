"""The input pretrained weights were trained on — size, centre-crop fraction, normalisation — read from the
weights' own metadata (torchvision's weights `transforms()`, timm's `pretrained_cfg`), so fine-tuning feeds them
images the way they learned to see them. Settings the user gave win; the rest are resolved before the data is
read and recorded in the run's config.yaml."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kiln.config import Config, ModelConfig
from kiln.core.errors import KilnError

log = logging.getLogger("kiln")


@dataclass(frozen=True)
class Preprocessing:
    source: str  # e.g. "torchvision resnet50 IMAGENET1K_V2"
    image_size: int
    crop_fraction: float
    mean: list[float]
    std: list[float]

    def values(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "crop_fraction": self.crop_fraction, "mean": self.mean,
                "std": self.std}


def of_weights(model: ModelConfig) -> Preprocessing | None:
    """What `model.pretrained` expects, or None when the weights carry no such metadata (a file, a run)."""
    arch = model.name.split(":", 1)[-1]
    if model.pretrained == "torchvision":
        import torchvision

        try:
            enum = torchvision.models.get_model_weights(arch)
            member = enum.DEFAULT if model.weights == "DEFAULT" else enum[model.weights]
        except (KeyError, ValueError):
            return None  # named by the weights loader, with the choices
        preset = member.transforms()
        crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
        return Preprocessing(f"torchvision {arch} {member.name}", crop, round(crop / resize, 4),
                             [float(v) for v in preset.mean], [float(v) for v in preset.std])
    if model.pretrained == "timm":
        import timm

        name = arch if model.weights == "DEFAULT" else f"{arch}.{model.weights}"
        cfg = timm.get_pretrained_cfg(name)
        if cfg is None:
            return None
        return Preprocessing(f"timm {name}", int(cfg.input_size[-1]), float(cfg.crop_pct),
                             [float(v) for v in cfg.mean], [float(v) for v in cfg.std])
    return None


def with_weights_preprocessing(cfg: Config) -> Config:
    """`cfg` with the weights' input settings where the user left them unset (image files only)."""
    from kiln.data.registry import resizes_images

    # only the user's own image files are resized and normalised by kiln; the built-in datasets keep their sizes
    if not resizes_images(cfg.data.name) or not cfg.model.pretrained:
        return cfg
    expected = of_weights(cfg.model)
    if expected is None:
        return cfg
    given = cfg.data.model_fields_set
    # (for grayscale images the data averages the three values: the adapted stem sums the RGB kernels)
    values = {k: v for k, v in expected.values().items() if k not in given}
    if not values:
        return cfg
    log.info("preprocessing of the %s weights: %s (set data.* to choose otherwise)", expected.source,
             ", ".join(f"data.{k}={v}" for k, v in values.items()))
    try:
        return cfg.model_copy(update={"data": cfg.data.model_copy(update=values)})
    except ValueError as e:
        raise KilnError(f"the {expected.source} preprocessing does not fit this config: {e}") from None
