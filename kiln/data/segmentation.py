"""`segmentation_folder`: images and their masks — a class index per pixel — for semantic segmentation.

    data.root/train/images/<stem>.<jpg|png|...>   data.root/train/masks/<stem>.png   (val/ and test/ alike, optional)
    data.root/classes.txt                           the class names in index order, background first (optional)

A mask is a single-channel PNG of class indices (255: ignore) the size of its image. Images and masks are read once
into memory at data.image_size (images bilinear, masks nearest) and checked; training augments each image and its
mask together (torchvision transforms v2: tv_tensors.Mask is resized nearest), drawn per batch from kiln's seeded
RNG, so a resumed run sees the same crops."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.assemble import Pool, assemble, plan_splits, pools_needed
from kiln.data.info import Data, DataInfo, DataRequest
from kiln.data.joint import MASK_FILL, joint_augment, refuse_pixel_only
from kiln.data.loaders import Batches

log = logging.getLogger("kiln")
IGNORE = MASK_FILL  # a mask value that no class has: those pixels are left out of the loss and the metrics
SPLITS = ("train", "val", "test")


@dataclass
class Pairs:
    """One split's images and masks, as uint8 tensors at the model's size."""

    images: torch.Tensor  # (N, C, H, W)
    masks: torch.Tensor  # (N, H, W)
    paths: list[Path] = field(default_factory=list)


def build_segmentation_data(cfg: DataConfig, request: DataRequest, holds: str) -> Data:
    """The splits found under data.root, read, checked, split (validation from train when there is no val/);
    `holds`: what the folder holds, for messages (kiln.data.spec.SegmentationFolder)."""
    if cfg.root is None:
        raise KilnError(f"data.name=segmentation_folder needs data.root: the folder holding {holds}")
    check_task_reads(request.task, "a mask per image", "segmentation")
    refuse_pixel_only(cfg, "masks")
    root = Path(cfg.root)
    found = {split: find_pairs(root, split, cfg.on_bad_row) for split in SPLITS if (root / split / "images").is_dir()}
    if "train" not in found:
        raise KilnError(f"{root} has no train/images/ folder; a segmentation folder holds {holds}")
    names = class_names(root, cfg)
    size = _size(cfg)
    channels = cfg.channels or 3
    needed = pools_needed(tuple(found), (*request.splits, "train"), cfg)
    pairs = {split: read_pairs(found[split], size, channels, len(names), cfg.on_bad_row) for split in needed}
    mean, std = _stats(cfg, pairs["train"].images)
    info = DataInfo(cfg.name, "image", len(names), names, in_channels=channels, image_size=size, mean=mean, std=std,
                    stored_size=size, crop=False)
    plan = plan_splits({split: Pool(len(p.masks)) for split, p in pairs.items()}, cfg, request.overfit_batches,
                       request.splits)
    derived = {k: v for k, v in {"image_size": list(size), "channels": channels, "class_names": names,
                                  "mean": list(mean), "std": list(std)}.items() if getattr(cfg, k) is None}
    from kiln.data.assemble import Found

    return assemble(MaskedImages(info, pairs, cfg, request), plan, request, Found(derived=derived))


def check_task_reads(task: str, what: str, which: str) -> None:
    """A source of masks (or boxes) trains a task that reads them, not one class per sample."""
    from kiln.tasks import task_class

    if task_class(task).class_per_sample:
        raise KilnError(f"data.name gives {what}; task.name={task} reads one class per sample — set task.name: {which}")


def find_pairs(root: Path, split: str, on_bad_row: str) -> list[tuple[Path, Path]]:
    """(image, mask) of every image of a split whose mask exists; an image without one is an error (or skipped)."""
    from kiln.data.image_files import IMAGE_EXTENSIONS

    images = sorted(p for p in (root / split / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    pairs, missing = [], []
    for image in images:
        mask = root / split / "masks" / f"{image.stem}.png"
        (pairs.append((image, mask)) if mask.is_file() else missing.append(image))
    if missing:
        if on_bad_row == "error":
            raise KilnError(f"{missing[0]} has no mask {root / split / 'masks' / (missing[0].stem + '.png')} "
                            f"({len(missing)} image(s) in {split}/ lack one); add the masks, or set "
                            "data.on_bad_row=skip to leave those images out")
        log.warning("skipped %d image(s) of %s without a mask (first: %s)", len(missing), split, missing[0])
    if not pairs:
        raise KilnError(f"{root / split / 'images'} has no image with a mask in {root / split / 'masks'}")
    return pairs


def class_names(root: Path, cfg: DataConfig) -> list[str]:
    """data.class_names, else classes.txt (one name per line, in index order), else class0..k-1 from the largest
    index in the training masks."""
    if cfg.class_names:
        return list(cfg.class_names)
    listed = root / "classes.txt"
    if listed.is_file():
        from kiln.data.image_files import read_class_map

        return read_class_map(listed)
    from PIL import Image

    top = 0
    for _, mask in find_pairs(root, "train", "skip"):
        with Image.open(mask) as m:
            values = np.unique(np.asarray(m))
        top = max([top, *(int(v) for v in values if v != IGNORE)])
    return [f"class{i}" for i in range(max(top + 1, 2))]


def read_pairs(pairs: list[tuple[Path, Path]], size: tuple[int, int], channels: int, num_classes: int,
               on_bad_row: str) -> Pairs:
    """Every pair decoded at `size` and checked: the mask is the image's size and holds only class indices (or
    255); a bad pair is an error naming the file (or, with data.on_bad_row=skip, left out and counted)."""
    images, masks, paths, bad = [], [], [], []
    for image, mask in pairs:
        try:
            x, m = _read_pair(image, mask, size, channels, num_classes)
        except KilnError as e:
            if on_bad_row == "error":
                raise KilnError(f"{e}; fix the file, or set data.on_bad_row=skip to leave such images out") from None
            bad.append(str(e))
            continue
        images.append(x)
        masks.append(m)
        paths.append(image)
    if bad:
        log.warning("skipped %d bad image/mask pair(s) (first: %s)", len(bad), bad[0])
    if not images:
        raise KilnError(f"no usable image/mask pair in {pairs[0][0].parent}")
    return Pairs(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks)), paths)


def _read_pair(image: Path, mask: Path, size: tuple[int, int], channels: int,
               num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from kiln.data.image_store import BadImage, decode

    try:
        with Image.open(image) as img:
            image_size = img.size
        x = decode(image, channels, size, crop=False)  # stretched: a predicted mask maps back by a resize
    except (BadImage, OSError) as e:
        raise KilnError(f"cannot read image {image}: {e}") from None
    try:
        with Image.open(mask) as m:
            if m.size != image_size:
                raise KilnError(f"mask {mask} is {m.size[0]}x{m.size[1]} but its image {image.name} is "
                                f"{image_size[0]}x{image_size[1]}; a mask labels every pixel of its image")
            values = np.asarray(m)
            if values.ndim != 2:
                raise KilnError(f"mask {mask} has {values.shape[2]} channels; a mask is one channel of class indices "
                                "(a palette or grayscale PNG)")
            bad = sorted({int(v) for v in np.unique(values) if v >= num_classes and v != IGNORE})
            if bad:
                raise KilnError(f"mask {mask} holds value(s) {', '.join(map(str, bad[:5]))}, outside the "
                                f"{num_classes} classes 0..{num_classes - 1} (255: ignore)")
            resized = _resized_mask(m, size)
    except OSError as e:
        raise KilnError(f"cannot read mask {mask}: {e}") from None
    return x, resized


def _resized_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """The mask stretched to `size` as its image is — nearest, so every pixel keeps a class index."""
    from PIL import Image

    return np.array(mask.resize((size[1], size[0]), Image.Resampling.NEAREST), dtype=np.uint8)


def _size(cfg: DataConfig) -> tuple[int, int]:
    if cfg.image_size is None:
        return (128, 128)  # recorded as derived: kiln test and predict read it back
    return (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else tuple(cfg.image_size)  # type: ignore[return-value]


def _stats(cfg: DataConfig, images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """data.mean / data.std, else the training images' per-channel mean and std (pixels in [0, 1])."""
    if cfg.mean is not None and cfg.std is not None:
        return tuple(cfg.mean), tuple(cfg.std)
    x = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)
    mean, std = x.mean(1), x.std(1).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


@dataclass
class MaskedImages:
    """The splits as a Source: each batch's images and masks augmented together (training), normalised, through
    kiln's batch plan (seeded per batch: exact resume)."""

    info: DataInfo
    pairs: dict[str, Pairs]
    cfg: DataConfig
    request: DataRequest
    loader: str = "dataloader"

    def batches(self, split: str, pool: str, idx: torch.Tensor) -> Batches:
        from kiln.data.user import planned_batches

        augment = joint_augment(self.cfg, self.info.image_size, boxes=False) if split == "train" else None
        samples = SegmentationSamples(self.pairs[pool], idx, self.info, augment)
        return planned_batches(samples, split, len(idx), self.info.num_classes, self.cfg, self.request)


class SegmentationSamples(Dataset):
    """(normalised image (C, H, W) float, mask (H, W) int64) of the samples `idx` of a split."""

    def __init__(self, pairs: Pairs, idx: torch.Tensor, info: DataInfo, augment: Any = None):
        self.pairs, self.idx, self.augment = pairs, idx, augment
        self.mean = torch.tensor(info.mean).reshape(-1, 1, 1)
        self.std = torch.tensor(info.std).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        j = int(self.idx[i])
        image, mask = tv_tensors.Image(self.pairs.images[j]), tv_tensors.Mask(self.pairs.masks[j])
        if self.augment is not None:
            image, mask = self.augment(image, mask)
        x = (image.as_subclass(torch.Tensor).float() / 255 - self.mean) / self.std
        return x, mask.as_subclass(torch.Tensor).long()
