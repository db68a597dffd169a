"""Image datasets (the IDX family) as batch sources: resident on the device, or through a DataLoader."""

from __future__ import annotations

import torch

from kiln.config import DataConfig
from kiln.data import Data, DataInfo, choose_loader, eval_batch_size, train_val_split
from kiln.data.loaders import Batches, EpochBatchSampler, LoaderBatches, ResidentBatches, TensorImages
from kiln.data.idx import load_split
from kiln.data.registry import IdxDataset, locate
from kiln.data.transforms import BatchTransform
from kiln.errors import KilnError


def build_image_data(spec: IdxDataset, cfg: DataConfig, *, seed: int, device: torch.device, splits: tuple[str, ...],
                     channels_last: bool, overfit_batches: int, rank: int, world_size: int) -> Data:
    folder = locate(spec, cfg.root, cfg.download)
    eval_batch = eval_batch_size(cfg)
    plain = BatchTransform(spec.mean, spec.std, None, channels_last)
    loaded = {split: load_split(spec, folder, split) for split in {"train" if s == "val" else s for s in splits}}
    class_names = list(spec.class_names)
    if cfg.classes is not None:
        loaded = {split: select_classes(*pair, cfg.classes, spec.num_classes) for split, pair in loaded.items()}
        class_names = [class_names[c] for c in cfg.classes]
    loader = choose_loader(cfg.loader, sum(x.numel() for x, _ in loaded.values()), device, cfg.resident_max_mb)

    def batches(images, labels, *, train: bool) -> Batches:
        augmented = train and not overfit_batches
        transform = BatchTransform(spec.mean, spec.std, cfg.augment, channels_last) if augmented else plain
        sampler = EpochBatchSampler(len(labels), cfg.batch_size if train else eval_batch, shuffle=augmented,
                                    drop_last=augmented, seed=seed, rank=rank, world_size=world_size)
        if loader == "resident":
            return ResidentBatches(images, labels, sampler=sampler, transform=transform, device=device, seed=seed)
        return LoaderBatches(TensorImages(images, labels), sampler=sampler, transform=transform, device=device,
                             seed=seed, num_workers=cfg.num_workers)

    sources: dict[str, Batches] = {}
    sizes: dict[str, int] = {}
    if "train" in loaded:
        images, labels = loaded.pop("train")
        shape = images.shape[1:]
        train_idx, val_idx = train_val_split(len(labels), cfg, overfit_batches)
        if "train" in splits:
            sources["train"] = batches(images[train_idx], labels[train_idx], train=True)
            sizes["train"] = len(train_idx)
        if "val" in splits and len(val_idx):
            sources["val"] = batches(images[val_idx], labels[val_idx], train=False)
            sizes["val"] = len(val_idx)
        del images, labels  # only the split copies stay: one host copy of the data, not two
    if "test" in loaded:
        images, labels = loaded.pop("test")
        shape = images.shape[1:]
        sources["test"] = batches(images, labels, train=False)
        sizes["test"] = len(labels)
    info = DataInfo(spec.name, "image", len(class_names), class_names, in_channels=int(shape[0]),
                    image_size=(int(shape[1]), int(shape[2])), mean=spec.mean, std=spec.std)
    return Data(info, sources.get("train"), sources.get("val"), sources.get("test"), sizes, loader)


def select_classes(images: torch.Tensor, labels: torch.Tensor, classes: list[int],
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the samples of `classes`, relabelled 0..k-1 in the order given."""
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or len(set(classes)) != len(classes):
        raise KilnError(f"data.classes={classes} must list distinct class numbers in 0..{num_classes - 1}")
    remap = torch.full((num_classes,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    keep = remap[labels] >= 0
    return images[keep], remap[labels[keep]]


def stored_images(batches: Batches) -> torch.Tensor:
    """The uint8 images (N, C, H, W) behind an image batch source, in split order (for showing them)."""
    if isinstance(batches, ResidentBatches):
        return batches.images
    if isinstance(batches, LoaderBatches) and isinstance(batches.loader.dataset, TensorImages):
        return batches.loader.dataset.images
    raise KilnError("these batches hold no stored images")
