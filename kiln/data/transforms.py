"""Batch transforms that run on the training device: uint8 -> normalised float, augmentation.

Augmentation works on whole batches with an explicit generator, so one
function serves every loader path and its randomness is a pure function of
(seed, epoch, batch index): exact resume needs no saved augmentation state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Augment:
    """The augmentation a split gets, with a dataset's defaults filled in (see `AugmentConfig`)."""

    crop_padding: int = 0
    hflip: bool = False
    resized_crop: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    preset: str | None = None  # randaugment | trivialaugment | augmix, per image after the crops and flips
    num_ops: int = 2
    magnitude: int = 9
    severity: int = 3
    random_erasing: float = 0.0

    @classmethod
    def resolve(cls, cfg: AugmentConfig) -> Augment:
        """The same for every source: the same images and config get the same augmentation, whichever files
        (IDX, a folder, a CSV) hold them."""
        return cls(cfg.crop_padding, cfg.hflip, cfg.resized_crop, cfg.scale, cfg.ratio, cfg.preset, cfg.num_ops,
                   cfg.magnitude, cfg.severity, cfg.random_erasing)

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.resized_crop or self.per_image

    @property
    def per_image(self) -> bool:
        """Whether a torchvision transform draws per image (a preset policy, random erasing)."""
        return self.preset is not None or self.random_erasing > 0

    def policy(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The preset as torchvision's transform of one uint8 image (C, H, W)."""
        from torchvision.transforms import v2

        if self.preset == "randaugment":
            return v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude)
        if self.preset == "trivialaugment":
            return v2.TrivialAugmentWide()
        if self.preset == "augmix":
            return v2.AugMix(severity=self.severity)
        return None


def per_image(images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor],
              generator: torch.Generator) -> torch.Tensor:
    """`transform` (a torchvision transform, which draws from torch's global generator) applied to each image of
    the batch, its draws seeded from the batch's generator: the same batch of the same epoch is transformed the
    same way on a resume, and the global generator (dropout's) is left as it was."""
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed_for(generator.initial_seed(), 0xA06))
        return torch.stack([transform(image) for image in images])


def centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central `size` (H, W) of a batch (B, C, H', W') at least that large."""
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float],
                        ratio: tuple[float, float], generator: torch.Generator, flip: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """torchvision's RandomResizedCrop, drawn independently for every image of the uint8 batch x (B, C, H, W),
    optionally mirrored per image. On the CPU, crops of 64x64 and more are each resized with antialiasing, as
    torchvision does (uint8 out); otherwise (smaller sizes, GPUs) all crops are resampled in one bilinear
    grid_sample (float out): one call per batch rather than one per image."""
    boxes = _crop_boxes(x.shape[0], x.shape[2], x.shape[3], scale, ratio, generator, x.device)
    # Per image pays a call per image, worth it for larger images only (measured: benchmarks/image_folder.py).
    per_image = x.device.type == "cpu" and size[0] * size[1] >= 64 * 64
    out = resample_each(x, boxes, size) if per_image else resample_grid(x, boxes, size)
    return out if flip is None else torch.where(flip[:, None, None, None], out.flip(3), out)


def resample_each(x: torch.Tensor, boxes: tuple[torch.Tensor, ...], size: tuple[int, int]) -> torch.Tensor:
    """Each image's box (left, top, width, height) resized to `size`, antialiased: one interpolate per image."""
    rows = torch.stack(boxes).long().T.tolist()
    return torch.cat([F.interpolate(x[i:i + 1, :, top:top + h, left:left + w], size=size, mode="bilinear",
                                    antialias=True, align_corners=False) for i, (left, top, w, h) in enumerate(rows)])


def resample_grid(x: torch.Tensor, boxes: tuple[torch.Tensor, ...], size: tuple[int, int]) -> torch.Tensor:
    """Every image's box resampled to `size` in one bilinear grid_sample (float out)."""
    x0, y0, cw, ch = boxes
    b, c, h, w = x.shape
    # The box [x0, x0 + cw) x [y0, y0 + ch) in grid_sample's coordinates (-1..1 spans the pixel edges).
    theta = torch.zeros((b, 2, 3), device=x.device)
    theta[:, 0, 0] = cw / w
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = F.affine_grid(theta, [b, c, size[0], size[1]], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_boxes(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
                generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(left, top, width, height) of each image's crop, as float tensors (B,)."""
    # Ten tries per image of (area, log-ratio), the first that fits wins; none fits: the centre crop at the
    # nearest allowed ratio. The same rule as torchvision.transforms.v2.RandomResizedCrop.get_params.
    u = torch.rand((2, b, 10), generator=generator, device=device)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    cw, ch = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)
    any_fits = fits.any(1)
    fw, fh = _fallback_crop(h, w, ratio)
    cw = torch.where(any_fits, cw.gather(1, first).squeeze(1), float(fw))
    ch = torch.where(any_fits, ch.gather(1, first).squeeze(1), float(fh))
    pos = torch.rand((2, b), generator=generator, device=device)
    x0 = torch.where(any_fits, (pos[0] * (w - cw + 1)).floor(), float((w - fw) // 2))
    y0 = torch.where(any_fits, (pos[1] * (h - ch + 1)).floor(), float((h - fh) // 2))
    return x0, y0, cw, ch


def _fallback_crop(h: int, w: int, ratio: tuple[float, float]) -> tuple[int, int]:
    if w / h < ratio[0]:
        return w, round(w / ratio[0])
    if w / h > ratio[1]:
        return round(h * ratio[1]), h
    return w, h


class BatchTransform:
    """uint8 images (B, C, H, W) -> float32 normalised per channel, optionally augmented, optionally channels_last.

    `size`: what the model takes (H, W). Larger stored images (image folders keep a margin for random crops) are
    centre-cropped to it, or randomly resized-cropped to it when training with `resized_crop`.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], augment: Augment | None = None,
                 channels_last: bool = False, size: tuple[int, int] | None = None):
        m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.scale, self.shift = 1 / (255 * s), -m / s  # (x / 255 - mean) / std = x * scale + shift
        self.augment = augment if augment is not None and augment.active else None
        self.channels_last, self.size = channels_last, size

    @property
    def augments(self) -> bool:
        return self.augment is not None

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        aug = self.augment
        size = self.size or (int(images.shape[-2]), int(images.shape[-1]))
        if aug is None:
            return self._finish(centre_crop(images, size).float())
        assert generator is not None, "augmentation needs a generator (its randomness must be resumable)"
        if aug.resized_crop:
            flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5 if aug.hflip else None
            x = random_resized_crop(images, size, aug.scale, aug.ratio, generator, flip)
        else:
            x = centre_crop(images, size).float()
            if aug.crop_padding:
                x = random_crop(x, aug.crop_padding, generator)
            if aug.hflip:
                x = random_hflip(x, generator)
        if (policy := aug.policy()) is not None:  # on the pixels, as the policies are defined (0..255 uint8)
            x = per_image(x.round().clamp(0, 255).to(torch.uint8), policy, generator)
        x = self._normalised(x.float() if policy is not None else x)
        if aug.random_erasing:  # on the normalised image, as timm does: the noise is of the model's input scale
            from torchvision.transforms import v2

            x = per_image(x, v2.RandomErasing(p=aug.random_erasing, value="random"), generator)
        return self._laid_out(x)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return self._laid_out(self._normalised(x))

    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels 0..255 -> (x / 255 - mean) / std, in one pass."""
        if self.scale.device != x.device:
            self.scale, self.shift = self.scale.to(x.device), self.shift.to(x.device)
        return torch.addcmul(self.shift, x, self.scale)

    def _laid_out(self, x: torch.Tensor) -> torch.Tensor:
        """channels_last when asked for, else plain NCHW strides."""
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        # Plain NCHW strides, whatever the augmentation left: the random crop gathers in NHWC, and with one channel
        # that still counts as "contiguous" while convolutions read it as channels_last, so a model that calls
        # `.view` after them (pytorch-template's MnistModel) would fail.
        _, c, h, w = x.shape
        return x if x.stride() == (c * h * w, h * w, w, 1) else x.clone(memory_format=torch.contiguous_format)
