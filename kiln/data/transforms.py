"""Batch transforms that run on the training device: uint8 -> normalised float, augmentation.

Augmentation works on whole batches with an explicit generator, so one
function serves every loader path and its randomness is a pure function of
(seed, epoch, batch index): exact resume needs no saved augmentation state.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kiln.config import AugmentConfig


def seed_for(*parts: int) -> int:
    """A well-mixed 63-bit seed derived from integers (e.g. seed, epoch, batch)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each side by `padding`, then crop back to (H, W) at a random offset per image. x: (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class BatchTransform:
    """uint8 images (B, C, H, W) -> float32 normalised, optionally augmented, optionally channels_last."""

    def __init__(self, mean: float, std: float, augment: AugmentConfig | None = None, channels_last: bool = False):
        self.mean, self.std = mean, std
        self.augment = augment
        self.channels_last = channels_last

    @property
    def augments(self) -> bool:
        return self.augment is not None and (self.augment.crop_padding > 0 or self.augment.hflip)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float().div_(255.0)
        if self.augments:
            assert self.augment is not None and generator is not None, \
                "augmentation needs a generator (its randomness must be resumable)"
            if self.augment.crop_padding:
                x = random_crop(x, self.augment.crop_padding, generator)
            if self.augment.hflip:
                x = random_hflip(x, generator)
        x = x.sub_(self.mean).div_(self.std)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        # Plain NCHW strides, whatever the augmentation left: the random crop gathers in NHWC, and with one channel
        # that still counts as "contiguous" while convolutions read it as channels_last, so a model that calls
        # `.view` after them (pytorch-template's MnistModel) would fail.
        b, c, h, w = x.shape
        return x if x.stride() == (c * h * w, h * w, w, 1) else x.clone(memory_format=torch.contiguous_format)
