"""Image datasets as batch sources (resident on the device, or through a DataLoader): the IDX family, and the
user's own image folders and CSVs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.assemble import Drawn, Found, Pool, assemble, plan_splits, pools_needed, sampler_for
from kiln.data.info import Data, DataInfo, DataRequest
from kiln.data.loaders import Batches, LoaderBatches, ResidentBatches, TensorImages, choose_loader
from kiln.data.locate import locate

if TYPE_CHECKING:
    from kiln.data.image_files import Found as Scanned
from kiln.data.transforms import Augment, BatchTransform
from kiln.tasks import task_class
from kiln.tasks.targets import as_tensor

log = logging.getLogger("kiln")


def build_image_data(spec, cfg: DataConfig, request: DataRequest) -> Data:
    """A registered image dataset (the IDX family, CIFAR): its train and test files, loaded whole."""
    folder = locate(spec, cfg.root, cfg.download)
    pools = pools_needed(("train", "test"), request.splits, cfg)
    loaded = {pool: spec.load(folder, pool) for pool in pools}
    class_names = list(spec.class_names)
    if cfg.classes is not None:
        loaded = {pool: select_classes(x, y, cfg.classes, spec.num_classes) for pool, (x, y) in loaded.items()}
        class_names = [class_names[c] for c in cfg.classes]
    shape = next(iter(loaded.values()))[0].shape[1:]
    loader = choose_loader(cfg.loader, sum(x.numel() for x, _ in loaded.values()), request.device,
                           cfg.resident_max_mb)
    # An IDX split is not stratified (it never was: a saved run resumes on the same split); its folds are.
    plan = plan_splits({pool: Pool(len(y), folds=y) for pool, (_, y) in loaded.items()}, cfg,
                       request.overfit_batches, request.splits)
    info = DataInfo(spec.name, "image", len(class_names), class_names, in_channels=int(shape[0]),
                    image_size=(int(shape[1]), int(shape[2])), mean=_per_channel(spec.mean, int(shape[0]), "mean"),
                    std=_per_channel(spec.std, int(shape[0]), "std"))
    # Only the split copies outlive the source: one host copy of the data, not two.
    return assemble(LoadedImages(info, loader, loaded, spec, cfg, request), plan, request)


@dataclass
class LoadedImages:
    """A registered image dataset's files, loaded whole (pool -> (uint8 images, labels)), as a Source: each split
    normalised (and for training augmented) on the device."""

    info: DataInfo
    loader: str
    loaded: dict[str, tuple[torch.Tensor, torch.Tensor]]
    spec: Any
    cfg: DataConfig
    request: DataRequest

    def batches(self, split: str, pool: str, idx: torch.Tensor) -> Batches:
        images, labels = self.loaded[pool]
        if not (len(idx) == len(labels) and torch.equal(idx, torch.arange(len(labels)))):  # a test file: no copy
            images, labels = images[idx], labels[idx]
        cfg, request, train = self.cfg, self.request, split == "train"
        augment = Augment.resolve(cfg.augment) if train and not request.overfit_batches else None
        transform = BatchTransform(self.spec.mean, self.spec.std, augment, request.channels_last)
        sampler = sampler_for(train, len(labels), cfg, request, labels)
        if self.loader == "resident":
            return ResidentBatches(images, labels, sampler=sampler, transform=transform, device=request.device,
                                   seed=request.seed)
        return LoaderBatches(TensorImages(images, labels), sampler=sampler, transform=transform,
                             device=request.device, seed=request.seed, num_workers=cfg.num_workers)


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


def stored_images(batches: Batches, indices: torch.Tensor) -> torch.Tensor:
    """The uint8 images (C, H, W) at `indices` (in split order) behind an image batch source, as stored: for showing
    them."""
    if isinstance(batches, ResidentBatches):
        return batches.images[indices.to(batches.images.device)].cpu()
    dataset = batches.loader.dataset if isinstance(batches, LoaderBatches) else None
    if isinstance(dataset, TensorImages):
        return dataset.images[indices]
    if isinstance(dataset, ImageRows):
        return dataset.source.fetch(dataset.rows[indices].tolist())
    raise KilnError("these batches hold no stored images")


# --------------------------------------------------------------------------- the user's own image files

def training_image_paths(spec, cfg: DataConfig, task: str) -> list[Path]:
    """The image files of the training pool (and a val/ folder, or the one list kiln splits) of an image folder or
    CSV."""
    return [path for name, files in spec.scan(cfg, task).files.items() if name in ("train", "val", "all")
            for path in files.paths]


def scan_image_files(spec, cfg: DataConfig, task: str) -> Scanned:
    """The image files of an image folder or CSV, by pool."""
    from kiln.data.image_files import read_class_map, scan_csvs, scan_folder

    if cfg.root is None and not (cfg.files and spec.layout == "csv"):
        raise KilnError(f"data.name={spec.name} needs data.root: the folder holding {spec.describe_files()}")
    if not task_class(task).class_per_sample and spec.layout == "folder":
        raise KilnError(f"task.name={task}: an image folder gives each image one class (its folder); list the images "
                        f"with their {task_class(task).file_hint} in train.csv / test.csv and use data.name: image_csv")
    class_names = cfg.class_names or (read_class_map(cfg.class_map) if cfg.class_map else None)
    if spec.layout == "folder":
        assert cfg.root is not None
        return scan_folder(cfg.root, class_names)
    return scan_csvs(cfg, class_names, task)


def build_file_image_data(spec, cfg: DataConfig, request: DataRequest) -> Data:
    """An image folder or image CSV: found, decoded once (or per sample), split, normalised, batched.

    Settings left unset (image_size, channels, class_names, mean, std) are derived from the training images and
    returned in `Data.derived`, so the run's config.yaml records what was used and `kiln test` / `predict` reuse it.
    """
    seed, device, splits, task, overfit_batches = (request.seed, request.device, request.splits, request.task,
                                                   request.overfit_batches)
    found = spec.scan(cfg, task)
    where = spec.location(cfg)
    log.info("%s: %s", where, found.describe())
    stats_needed = cfg.mean is None or cfg.std is None  # computed on the training split, whatever is asked for
    needed = pools_needed(tuple(found.files), (*splits, "train") if stats_needed else splits, cfg)
    if not needed:  # e.g. the test split of train/ + val/ folders: there is none (training's final test skips it)
        if cfg.image_size is None or cfg.channels is None or stats_needed:
            raise KilnError(f"{where} has no {' or '.join(splits)} split ({found.layout})")
        return Data(_file_info(spec, cfg, found.class_names))
    derived = _derive_image_settings(cfg, found, needed)
    cfg = cfg.with_values(derived)
    sources = {name: _image_source(found.files[name], cfg, _stored_size(cfg)) for name in needed}
    for name, (_, rows) in sources.items():  # files that could not be decoded are left out (on_bad_row=skip)
        found.files[name] = found.files[name].drop(set(range(len(found.files[name].paths))) - set(rows.tolist()))
    full_plan = split_files(found, cfg, overfit_batches, task)
    plan = {split: full_plan[split] for split in splits if split in full_plan}
    if stats_needed:
        name, idx = full_plan["train"]
        mean, std = derived["mean"], derived["std"] = _pixel_stats(sources[name], idx, seed)
        cfg = cfg.with_values(derived)
        log.info("normalisation computed on the training images: mean %s, std %s", _fmt(mean), _fmt(std))
    info = _file_info(spec, cfg, found.class_names)
    per_image = _config_transforms(cfg, seed, info.image_size, sources, plan, overfit_batches)
    loader = _image_loader(cfg, sources, plan, bool(per_image), device)
    labels = {name: as_tensor(found.files[name].labels) for name in sources}
    groups = {name: torch.tensor(found.files[name].groups) for name in sources if found.files[name].groups}
    return assemble(ImageFiles(info, loader, sources, labels, per_image, cfg, request, groups), plan, request,
                    Found(derived=derived))


@dataclass
class ImageFiles:
    """Image files as a Source: each pool's decoded store (or per-sample decoder) with its usable rows and labels;
    a split is served from device memory (resident) or by a DataLoader, normalised and augmented on the device
    unless data.transforms gives it per-image transforms."""

    info: DataInfo
    loader: str
    sources: dict[str, tuple[Any, torch.Tensor]]  # pool -> (store or decoder, rows)
    labels: dict[str, torch.Tensor]  # pool -> every file's label
    per_image: dict[str, Any]  # split -> PerImage (data.transforms)
    cfg: DataConfig
    request: DataRequest
    groups: dict[str, torch.Tensor] = field(default_factory=dict)  # pool -> what each file is read with (shards)

    def batches(self, split: str, pool: str, idx: torch.Tensor) -> Batches:
        cfg, request, info = self.cfg, self.request, self.info
        source, rows = self.sources[pool]
        labels = self.labels[pool][idx]
        train = split == "train" and not request.overfit_batches
        augment = Augment.resolve(cfg.augment) if train and split not in self.per_image else None
        transform = BatchTransform(info.mean, info.std, augment, request.channels_last, info.image_size)
        sampler = sampler_for(split == "train", len(idx), cfg, request, labels,
                              groups=self.groups[pool][idx] if pool in self.groups else None)
        if self.loader == "resident":
            return ResidentBatches(source.fetch(rows[idx].tolist()), labels, sampler=sampler, transform=transform,
                                   device=request.device, seed=request.seed)
        return LoaderBatches(ImageRows(source, rows[idx], labels, self.per_image.get(split)), sampler=sampler,
                             transform=transform, device=request.device, seed=request.seed,
                             num_workers=cfg.num_workers)


def _file_info(spec, cfg: DataConfig, class_names: list[str]) -> DataInfo:
    """What a model and `kiln predict` need to know about images read from files (every setting resolved)."""
    assert cfg.mean is not None and cfg.std is not None
    return DataInfo(spec.name, "image", len(class_names), class_names, in_channels=int(cfg.channels or 3),
                    image_size=_image_size(cfg), mean=_per_channel(cfg.mean, cfg.channels, "mean"),
                    std=_per_channel(cfg.std, cfg.channels, "std"), stored_size=_stored_size(cfg))


def _stored_size(cfg: DataConfig) -> tuple[int, int]:
    """Images are decoded at image_size / crop_fraction: evaluation crops the centre, training crops at random."""
    h, w = _image_size(cfg)
    return round(h / cfg.crop_fraction), round(w / cfg.crop_fraction)


def _image_loader(cfg: DataConfig, sources, plan, per_image: bool, device: torch.device) -> str:
    """resident (the decoded images in device memory) or dataloader, said in the log with the reason."""
    from kiln.data.image_store import ImageStore

    stored = _stored_size(cfg)
    num_bytes = sum(len(idx) for _, idx in plan.values()) * int(cfg.channels or 3) * stored[0] * stored[1]
    cached = all(isinstance(src, ImageStore) for src, _ in sources.values())
    loader = choose_loader(cfg.loader, num_bytes, device, cfg.resident_max_mb or _host_budget(device)) \
        if cached and not per_image else "dataloader"
    log.info("images: %s, served %s", "decoded once (cache)" if cached else "decoded per sample every epoch "
             "(data.cache)", "from device memory (resident)" if loader == "resident" else
             "by a DataLoader" + (" (per-image transforms from data.transforms)" if per_image else ""))
    return loader


class ImageRows(torch.utils.data.Dataset):
    """Rows of an image source (a decoded store, or files decoded on demand) with their labels; batches are
    fetched whole (`__getitems__`), in DataLoader workers when data.num_workers > 0."""

    def __init__(self, source, rows: torch.Tensor, labels: torch.Tensor, per_image=None):
        self.source, self.rows, self.labels, self.per_image = source, rows, labels, per_image

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = self.source.fetch(self.rows[idx].tolist())
        if self.per_image is not None:  # BatchIndices say which (epoch, batch) this is: the transforms' seed
            images = self.per_image(images, getattr(indices, "epoch", 0), getattr(indices, "batch", 0))
        return images, self.labels[idx]


def _config_transforms(cfg: DataConfig, seed: int, size: tuple[int, int], sources, plan,
                       overfit_batches: int) -> dict:
    """split -> PerImage for the splits data.transforms covers, each tried on one of its images now."""
    from kiln.data.config_transforms import PerImage, build_pipeline

    out = {}
    for split, (name, idx) in plan.items():
        train = split == "train" and not overfit_batches
        entries = cfg.transforms.train if train else cfg.transforms.eval
        if not entries:
            continue
        key = "data.transforms." + ("train" if train else "eval")
        out[split] = PerImage(build_pipeline(entries, key), seed, size, key)
        source, rows = sources[name]
        out[split].check(source.fetch([int(rows[idx[0]])])[0])
    return out


def split_files(found, cfg: DataConfig, overfit_batches: int, task: str = "multiclass") -> dict[str, Drawn]:
    """split -> (file list, indices into it), every split there is (kiln.data.assemble.plan_splits)."""
    return plan_splits({name: _pool(name, files, cfg, task) for name, files in found.files.items()}, cfg,
                       overfit_batches)


def _pool(name: str, files, cfg: DataConfig, task: str) -> Pool:
    """A found file list as a pool: a training list (or the one list of everything) is split and folded by its
    targets — by class, by rarest label, by value quantile (kiln.tasks.targets)."""
    if name not in ("train", "all"):
        return Pool(len(files.paths))
    targets = as_tensor(files.labels)
    return Pool(len(files.paths), task_class(task).split_keys(targets),
                task_class(task).fold_keys(targets, cfg.cv.folds if cfg.cv else 2),
                chosen_val=named_files(cfg.val_files, cfg.root, files.paths) if cfg.val_files else None)


def named_files(listing: Path, root: Path | None, paths: list[Path]) -> torch.Tensor:
    """The indices in `paths` of the images a list file names (one path per line, relative to data.root or
    absolute; blank lines and # comments ignored); every name must be one of `paths`."""
    if not listing.is_file():
        raise KilnError(f"data.val_files={listing}: no such file (one training image path per line, e.g. from "
                        "kiln shift --val-like)")
    lines = [line.strip() for line in listing.read_text().splitlines() if line.strip() and not line.startswith("#")]
    where = {p.resolve(): i for i, p in enumerate(paths)}
    found = [where.get((Path(line) if Path(line).is_absolute() else (root or Path()) / line).resolve())
             for line in lines]
    if unknown := [line for line, i in zip(lines, found) if i is None]:
        raise KilnError(f"data.val_files={listing}: {len(unknown)} of its {len(lines)} lines are not training "
                        f"images under data.root ({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''})")
    return torch.tensor(sorted({i for i in found if i is not None}), dtype=torch.long)


def _derive_image_settings(cfg: DataConfig, found, needed: list[str]) -> dict[str, Any]:
    """Class names, channels and image size left unset in `cfg`: from the found files and the training images'
    headers (data.* key -> value)."""
    derived: dict[str, Any] = {}
    if cfg.class_names is None:
        derived["class_names"] = list(found.class_names)
    if cfg.channels is not None and cfg.image_size is not None:
        return derived
    from kiln.data.image_store import BadImage, probe

    name = "train" if "train" in needed else needed[0]
    sizes, gray, bad = [], True, set()
    for i, path in enumerate(found.files[name].paths):
        try:
            w, h, is_gray = probe(path)
        except BadImage as e:
            if cfg.on_bad_row == "error":
                raise KilnError(f"cannot read image {found.files[name].where[i]}: {e.error}. Remove or replace the "
                                "file, or set data.on_bad_row=skip") from None
            bad.add(i)
            continue
        sizes.append(min(w, h))
        gray &= is_gray
    if bad:
        log.warning("skipping %d unreadable images in %s", len(bad), cfg.root)
        found.files[name] = found.files[name].drop(bad)
    if cfg.channels is None:
        derived["channels"] = 1 if gray else 3
        log.info("data.channels=%d (%s)", derived["channels"], "every image is grayscale" if gray else "colour images")
    if cfg.image_size is None:
        median = sorted(sizes)[len(sizes) // 2] if sizes else 224
        derived["image_size"] = int(min(224, max(8, 8 * round(median / 8))))
        log.info("data.image_size=%d (the median short side of the training images is %d px; at most 224)",
                 derived["image_size"], median)
    return derived


def _image_size(cfg: DataConfig) -> tuple[int, int]:
    s = cfg.image_size
    assert s is not None
    return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))


def _image_source(files, cfg: DataConfig, stored: tuple[int, int]):
    """(source, rows): the decoded store (or a per-sample decoder) of a file list, and the rows usable in it."""
    import os

    from kiln.data.image_store import DecodedFiles, ImageStore

    channels = int(cfg.channels or 3)
    num_bytes = len(files.paths) * channels * stored[0] * stored[1]
    if cfg.cache == "off" or (cfg.cache == "auto" and num_bytes > cfg.cache_max_mb * 2**20):
        if cfg.cache == "auto":
            log.info("image cache: off (the store would take %.0f MiB > data.cache_max_mb=%g); decoding per sample",
                     num_bytes / 2**20, cfg.cache_max_mb)
        return DecodedFiles(files.paths, channels, stored), torch.arange(len(files.paths))
    store = ImageStore.open_or_build(files.paths, channels, stored, workers=min(16, os.cpu_count() or 1))
    if store.bad:
        listed = "\n  ".join(f"{files.where[i]}" for i in store.bad[:5])
        if cfg.on_bad_row == "error":
            raise KilnError(f"{len(store.bad)} image(s) cannot be decoded (corrupt, truncated or not images):\n  "
                            f"{listed}\nRemove or replace them, or set data.on_bad_row=skip")
        log.warning("skipping %d images that cannot be decoded:\n  %s", len(store.bad), listed)
    bad = set(store.bad)
    return store, torch.tensor([i for i in range(len(files.paths)) if i not in bad], dtype=torch.long)


def _pixel_stats(source_rows, idx: torch.Tensor, seed: int, limit: int = 2000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels in [0, 1] over (up to `limit`, seeded) training images."""
    source, rows = source_rows
    pick = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:limit]].sort().values
    total = sq = torch.zeros((), dtype=torch.float64)  # broadcast to one value per channel by the first chunk
    count = 0
    for chunk in rows[pick].split(256):
        x = source.fetch(chunk.tolist()).double().div_(255.0)
        total = total + x.sum((0, 2, 3))
        sq = sq + (x * x).sum((0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return [round(float(v), 4) for v in mean], [round(float(max(v, 1e-3)), 4) for v in std]


def _per_channel(values: float | Sequence[float], channels: int | None, what: str) -> tuple[float, ...]:
    """One value per channel (a single value serves every channel)."""
    values = [values] if isinstance(values, (int, float)) else list(values)
    channels = int(channels or 3)
    if len(values) == channels:
        return tuple(float(v) for v in values)
    if len(values) == 1:
        return tuple(float(values[0]) for _ in range(channels))
    if channels == 1:  # e.g. ImageNet's colour statistics for a grayscale run: their average
        return (sum(values) / len(values),)
    raise KilnError(f"data.{what} has {len(values)} values for {channels}-channel images; give one per channel")


def _host_budget(device: torch.device) -> float | None:
    """On the CPU a decoded store is served from memory only while it takes at most a quarter of the RAM;
    larger ones are read through the memory map."""
    if device.type != "cpu":
        return None
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4 / 2**20


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
