"""data.augment for an image and what marks it — a mask, boxes — together: torchvision's transforms v2 move the
marks with the pixels (tv_tensors.Mask, tv_tensors.BoundingBoxes). What cannot move them (torchvision's policies,
random erasing, per-image transform lists) is refused before any image is read, never silently skipped."""

from __future__ import annotations

from typing import Any

from kiln.config import DataConfig
from kiln.core.errors import KilnError

MASK_FILL = 255  # what padding adds to a mask: the ignore value (no class), so padded pixels are not learned


def refuse_pixel_only(cfg: DataConfig, marks: str) -> None:
    """A KilnError naming each augmentation set that changes pixels without moving the `marks` (masks, boxes)."""
    augment = cfg.augment
    pixel_only = [key for key, on in (("data.augment.preset", augment.preset is not None),
                                      ("data.augment.random_erasing", augment.random_erasing > 0),
                                      ("data.transforms.train", bool(cfg.transforms.train)),
                                      ("data.transforms.eval", bool(cfg.transforms.eval))) if on]
    if pixel_only:
        raise KilnError(f"{', '.join(pixel_only)} would change the images without moving their {marks} "
                        "(torchvision's policies and erasing do not take them); unset it — data.augment.resized_crop, "
                        f"crop_padding and hflip move the {marks} with the image")


def joint_augment(cfg: DataConfig, size: tuple[int, int], boxes: bool) -> Any:
    """The training augmentation of data.augment for an image with its mask or boxes (None: none asked for):
    crop_padding (a random crop of the padded image; masks padded with the ignore value), resized_crop (scale,
    ratio), hflip. Boxes are clamped to the image afterwards, and boxes cut to nothing dropped with their labels."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    augment = cfg.augment
    steps: list[Any] = []
    if augment.crop_padding:
        steps.append(v2.RandomCrop(size, padding=augment.crop_padding, fill={tv_tensors.Mask: MASK_FILL, "others": 0}))
    if augment.resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(augment.scale), ratio=tuple(augment.ratio), antialias=True))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if steps and boxes:
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1)]
    return v2.Compose(steps) if steps else None
