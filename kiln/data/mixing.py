"""MixUp and CutMix: whole training batches mixed with themselves in another order, on the training device.

A batch is mixed with its own roll by one sample (as torchvision's v2 MixUp/CutMix do): sample i with sample i-1.
Each batch draws whether it is mixed, which of the two mixes it gets and the mixing share from a generator seeded
by (seed, epoch, batch), so a resumed run mixes every batch exactly as the uninterrupted run did, with no saved
state. The targets become soft (each row a mixture of two samples' targets); the task turns its targets into
that form (`Task.soft_targets`) and its loss and running training metric take either form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kiln.config import AugmentConfig
from kiln.core.errors import KilnError
from kiln.data.transforms import seed_for

SALT = 0x313C  # keeps the mixing draws apart from the augmentation's, which are seeded by (seed, epoch, batch) too


@dataclass(frozen=True)
class Mix:
    """One batch's draw: which mix (None: the batch stays plain), the share of each sample's own target, and
    CutMix's box (top, left, bottom, right)."""

    kind: str | None
    share: float = 1.0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)


class BatchMix:
    """MixUp / CutMix of training batches (data.augment.mixup, cutmix, mix_prob, mix_switch_prob, mix_off_epoch)."""

    def __init__(self, cfg: AugmentConfig, seed: int, soft_targets: Callable[[Any], torch.Tensor]):
        self.cfg, self.seed, self.soft_targets = cfg, seed, soft_targets

    def draw(self, epoch: int, batch: int, height: int, width: int) -> Mix:
        """The mix of batch `batch` of `epoch` (0-based) for images of height x width (a pure function)."""
        cfg = self.cfg
        if cfg.mix_off_epoch is not None and epoch + 1 >= cfg.mix_off_epoch:
            return Mix(None)
        rng = np.random.default_rng(seed_for(self.seed, epoch, batch, SALT))
        if rng.random() >= cfg.mix_prob:
            return Mix(None)
        cut = cfg.cutmix > 0 and (cfg.mixup == 0 or rng.random() < cfg.mix_switch_prob)
        if not cut:
            return Mix("mixup", float(rng.beta(cfg.mixup, cfg.mixup)))
        # CutMix's box: a side of sqrt(1 - share) of the image's, centred anywhere, clipped to the image; the share
        # is then what the clipped box leaves of the image, so the targets weigh exactly what the pixels show.
        side = np.sqrt(1.0 - float(rng.beta(cfg.cutmix, cfg.cutmix)))
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        half_h, half_w = int(height * side) // 2, int(width * side) // 2
        top, bottom = max(cy - half_h, 0), min(cy + half_h, height)
        left, right = max(cx - half_w, 0), min(cx + half_w, width)
        return Mix("cutmix", 1.0 - (bottom - top) * (right - left) / (height * width), (top, left, bottom, right))

    def __call__(self, inputs: Any, targets: Any, epoch: int, batch: int) -> tuple[Any, Any]:
        """The batch mixed as drawn for (epoch, batch): inputs and soft targets; unmixed batches are returned as
        they came."""
        check_mixable(inputs, self.cfg)
        mix = self.draw(epoch, batch, *_spatial(inputs))
        if mix.kind is None:
            return inputs, targets
        soft = self.soft_targets(targets).float()
        mixed_targets = torch.lerp(soft.roll(1, 0), soft, mix.share)  # share x own + (1 - share) x partner's
        if mix.kind == "mixup":
            return torch.lerp(inputs.roll(1, 0), inputs, mix.share), mixed_targets
        top, left, bottom, right = mix.box
        out = inputs.clone()
        out[..., top:bottom, left:right] = inputs.roll(1, 0)[..., top:bottom, left:right]
        return out, mixed_targets


def _spatial(inputs: torch.Tensor) -> tuple[int, int]:
    return (int(inputs.shape[-2]), int(inputs.shape[-1])) if inputs.ndim >= 4 else (1, 1)


def check_mixable(inputs: Any, cfg: AugmentConfig) -> None:
    """Mixing needs inputs that can be blended: floating-point tensors, and images (B, C, H, W) for CutMix."""
    what = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        key = "data.augment.mixup" if cfg.mixup else "data.augment.cutmix"
        raise KilnError(f"{key} blends the inputs of two samples, which must be a floating-point tensor (images, "
                        f"features); this run's inputs are {what} (token ids, dicts and tuples cannot be blended). "
                        "Unset data.augment.mixup and data.augment.cutmix for this data")
    if cfg.cutmix and inputs.ndim != 4:
        raise KilnError(f"data.augment.cutmix pastes a box of one image into another and needs images (batch, "
                        f"channels, height, width); this run's inputs are {what}. Use data.augment.mixup instead")
