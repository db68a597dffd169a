"""Your own `torch.utils.data.Dataset` class as a kiln data source: `data.name: my_pkg.data:PetsDataset`.

Samples may be `(x, y)`, `x` alone (no label: prediction only) or a dict with `input` / `label`; `x` may be a
tensor, a tuple of tensors or a dict of tensors (passed to the model as positional or keyword arguments). Splits:
a class whose constructor takes `split` is built with split="train" / "val" / "test"; otherwise it is built once as
the training set, the seeded validation split comes from it, and a test split only from `data.test_args`.
Randomness in `__getitem__` (random, numpy, torch) is seeded per batch from (seed, epoch, batch), so batches are
the same with any number of workers and after a resume.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

from kiln.config import DataConfig
from kiln.core.errors import KilnError, first_line
from kiln.data.assemble import assemble, sampler_for
from kiln.data.info import Data, DataInfo, DataRequest
from kiln.data.loaders import Batches, EpochBatchSampler, LoaderBatches, eval_batch_size
from kiln.data.splits import train_val_split
from kiln.data.transforms import seed_for
from kiln.tasks import task_class

log = logging.getLogger("kiln")


def build_user_data(cfg: DataConfig, request: DataRequest) -> Data:
    from kiln.core.user_code import resolve

    splits, task, overfit_batches, world_size = request.splits, request.task, request.overfit_batches, request.world_size

    cls = resolve("data.name", cfg.name, Dataset, functions=False)
    if cfg.sampler == "weighted":
        raise KilnError("data.sampler=weighted needs every training label before the epoch starts, which kiln does "
                        "not read from your own Dataset; use task.class_weights (auto reads the labels once) or "
                        "a WeightedRandomSampler-like order inside your Dataset")
    stream = issubclass(cls, torch.utils.data.IterableDataset)
    if stream:
        _explain_stream(cfg, cls, world_size)
    collate = resolve_collate(cfg.collate)
    datasets = _splits(cls, cfg, splits, overfit_batches)
    if not datasets:  # e.g. the test split of a Dataset that has none
        return Data(DataInfo(cfg.name, "custom", cfg.num_classes or 0, []), loader="dataloader")
    info = _info(cfg, datasets.get("train") or next(iter(datasets.values())), task)
    # Each split is a Dataset (or a Subset of one) of its own: drawn whole.
    plan = {split: (split, torch.arange(_size(ds))) for split, ds in datasets.items()}
    return assemble(UserDatasets(info, datasets, collate, stream, cfg, request), plan, request)


@dataclass
class UserDatasets:
    """Your own Dataset's splits as a Source: samples collated into batches (seeded per batch) through a
    DataLoader, or read as they stream (an IterableDataset)."""

    info: DataInfo
    datasets: dict[str, Dataset]
    collate: Callable | None
    stream: bool
    cfg: DataConfig
    request: DataRequest
    loader: str = "dataloader"

    def batches(self, split: str, pool: str, idx: torch.Tensor) -> Batches:
        cfg, request, ds = self.cfg, self.request, self.datasets[pool]
        if self.stream:
            make = BatchMaker(self.collate, split, self.info.num_classes, request.task)
            return StreamBatches(ds, cfg.batch_size if split == "train" else eval_batch_size(cfg), make,
                                 device=request.device, num_workers=cfg.num_workers)
        # (data.sampler=weighted was refused above: kiln does not read your Dataset's labels up front)
        return planned_batches(ds, split, len(idx), self.info.num_classes, cfg, request, self.collate)


def _explain_stream(cfg: DataConfig, cls, world_size: int) -> None:
    """An IterableDataset is accepted with what it gives up said once, and what it cannot do refused now."""
    if not _takes_split(cls) and cfg.val_split:
        raise KilnError(f"data.name={cfg.name!r} is an IterableDataset without a split argument: kiln cannot take a "
                        "validation split out of a stream. Give its constructor a `split` argument (kiln then asks "
                        "for split='train', 'val', 'test'), or set data.val_split=0")
    log.warning("data: %s is an IterableDataset, read as it streams: kiln does not shuffle it (its order is the "
                "stream's; a `set_epoch(epoch)` method is called each epoch if it has one), a resume re-reads the "
                "interrupted epoch from its start and skips the batches already trained%s%s", cfg.name,
                "; with data.num_workers > 0 each worker runs its own copy of the stream, so shard it with "
                "torch.utils.data.get_worker_info()" if cfg.num_workers else "",
                "; under DDP every process reads the whole stream unless it shards by "
                "torch.distributed.get_rank()" if world_size > 1 else "")


def resolve_collate(spec: str | None) -> Callable | None:
    if spec is None:
        return None
    from kiln.core.user_code import resolve

    return resolve("data.collate", spec, None, functions=True)  # a function of the user's own only


def _takes_split(cls) -> bool:
    try:
        return "split" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _build(cls, name: str, args: dict[str, Any]) -> Dataset:
    try:
        return cls(**args)
    except TypeError as e:
        raise KilnError(f"data.name={name!r} could not be built from data.args={args}: {e}") from None


def _splits(cls, cfg: DataConfig, splits: tuple[str, ...], overfit_batches: int) -> dict[str, Dataset]:
    """Each requested split that exists. Never evaluates "test" on training data (a cv fold's test split is the
    fold held out of training)."""
    if cfg.cv is not None:
        return _cv_splits(cls, cfg, splits, overfit_batches)
    out: dict[str, Dataset] = {}
    if _takes_split(cls):
        for split in ("train", "val", "test", "predict"):
            if split not in splits and not (split == "train" and "val" in splits):
                continue
            try:
                ds = cls(**cfg.args, split=split)
            except (ValueError, KeyError) as e:
                log.info("data: %s has no %s split (%s)", cfg.name, split, e)
                continue
            except TypeError as e:
                raise KilnError(f"data.name={cfg.name!r} could not be built from data.args={cfg.args}: {e}") from None
            if _size(ds) == 0:
                log.info("data: %s's %s split is empty: left out", cfg.name, split)
                continue
            out[split] = ds
        if "val" not in out and "train" in out and cfg.val_split:  # no val split of its own: take one
            out["train"], val = _seeded_split(out["train"], cfg, overfit_batches)
            if _size(val):
                out["val"] = val
    else:
        if "train" in splits or "val" in splits:
            out["train"], val = _seeded_split(_build(cls, cfg.name, cfg.args), cfg, overfit_batches)
            if _size(val):
                out["val"] = val
        if "test" in splits and cfg.test_args is not None:
            out["test"] = _build(cls, cfg.name, cfg.test_args)
        elif "test" in splits:
            log.info("data: %s takes no split argument and data.test_args is unset: no test split (kiln never "
                     "tests on training data)", cfg.name)
    return {k: v for k, v in out.items() if k in splits}


def _cv_splits(cls, cfg: DataConfig, splits: tuple[str, ...], overfit_batches: int) -> dict[str, Dataset]:
    """data.cv on your own Dataset: its training set cut into folds (by position: kiln does not read the labels),
    the held-out fold as test, validation from the rest."""
    from kiln.data.splits import cv_folds

    full = cls(**cfg.args, split="train") if _takes_split(cls) else _build(cls, cfg.name, cfg.args)
    if isinstance(full, torch.utils.data.IterableDataset):
        raise KilnError("kiln cv cannot cut a stream (IterableDataset) into folds; use a map-style Dataset")
    out: dict[str, Dataset] = {}
    out["train"], val = _seeded_split(full, cfg, overfit_batches)
    if _size(val):
        out["val"] = val
    out["test"] = Subset(full, cv_folds(_size(full), cfg)[1].tolist())
    return {k: v for k, v in out.items() if k in splits}


def _seeded_split(full: Dataset, cfg: DataConfig, overfit_batches: int) -> tuple[Dataset, Dataset]:
    if isinstance(full, torch.utils.data.IterableDataset):  # a stream cannot be indexed: no validation split taken
        return full, Subset(full, [])
    train_idx, val_idx = train_val_split(_size(full), cfg, overfit_batches)
    return Subset(full, train_idx.tolist()), Subset(full, val_idx.tolist())


def _size(ds: Any) -> int:
    """A Dataset's length (Dataset itself does not declare __len__; a stream must, for the epoch plan)."""
    try:
        return len(ds)
    except TypeError:
        raise KilnError(f"{type(ds).__name__} has no __len__: kiln needs the number of samples per epoch of an "
                        "IterableDataset (for the schedule, the progress bar and resume); define __len__") from None


def _base(ds: Dataset | None) -> Any:
    while isinstance(ds, Subset):
        ds = ds.dataset
    return ds


def _info(cfg: DataConfig, ds: Dataset | None, task: str = "multiclass") -> DataInfo:
    """Class (or label, or target) names from the dataset's `classes` / `class_to_idx` / `num_classes`, else
    data.num_classes; a regression Dataset without them has one target."""
    base = _base(ds)
    names: list[str] | None = None
    if isinstance(getattr(base, "classes", None), (list, tuple)):
        names = [str(c) for c in base.classes]
    elif isinstance(getattr(base, "class_to_idx", None), dict):
        names = [str(k) for k, _ in sorted(base.class_to_idx.items(), key=lambda kv: kv[1])]
    kind = task_class(task)
    count = (len(names) if names else getattr(base, "num_classes", None) or cfg.num_classes) or kind.default_count
    if not isinstance(count, int) or count < 1:
        raise KilnError(f"data.name={cfg.name!r}: cannot tell the number of {kind.noun}; give the dataset a `classes` "
                        "list, `class_to_idx` or `num_classes` attribute, or set data.num_classes")
    names = names or kind.default_names(count)
    channels, size = _image_shape(ds)
    return DataInfo(cfg.name, "custom", count, names, in_channels=channels, image_size=size)


def _image_shape(ds: Dataset | None) -> tuple[int, tuple[int, int]]:
    """(C, (H, W)) when the first sample's input is one (C, H, W) image tensor, so kiln's image models (cnn, mlp,
    resnet) are built for it and the run records it; (0, (0, 0)) otherwise (a stream is not read ahead)."""
    if ds is None or isinstance(ds, torch.utils.data.IterableDataset) or _size(ds) == 0:
        return 0, (0, 0)
    try:
        sample = ds[0]
    except Exception:  # noqa: BLE001 — the first-batch check reports a Dataset that cannot be read, with context
        return 0, (0, 0)
    inputs = sample[0] if isinstance(sample, (tuple, list)) and sample else sample
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 3 and inputs.is_floating_point():
        return int(inputs.shape[0]), (int(inputs.shape[1]), int(inputs.shape[2]))
    return 0, (0, 0)


@contextmanager
def _rng_for(seed: int, epoch: int, batch: int, restore: bool):
    """Seed random/numpy/torch for one batch; in the main process put the training RNGs back afterwards."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if restore else None
    s = seed_for(seed, epoch, batch, 0xDA7A)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class BatchMaker:
    """Samples -> (inputs, targets): the user's collate (or PyTorch's), split into inputs and labels, checked."""

    def __init__(self, collate: Callable | None, split: str, num_classes: int, task: str = "multiclass"):
        self.collate, self.split, self.num_classes, self.task = collate, split, num_classes, task

    def __call__(self, samples: list, own: Callable[[], list[int]]) -> tuple[Any, torch.Tensor | None]:
        if self.collate:
            inputs, targets = split_sample(self.collate(samples))
        else:  # the inputs by PyTorch's collate, the targets by the task's (targets need not be tensors)
            parts = [split_sample(sample) for sample in samples]
            inputs = _default_collate([x for x, _ in parts], own(), self.split)
            labels = [y for _, y in parts]
            targets = None if any(y is None for y in labels) else _collate_targets(labels, self.task, own, self.split)
        if targets is None and self.split in ("train", "val", "test"):
            raise KilnError(f"the {self.split} samples have no labels (sample {own()[0]} is "
                            f"{describe(samples[0])}); return (x, y) or {{'input': x, 'label': y}} from __getitem__ "
                            "(x alone: prediction only)")
        if targets is not None:
            targets = _checked_targets(targets, own, self.num_classes, self.split, self.task)
        return inputs, targets


class StreamBatches:
    """A user IterableDataset as a batch source: batches in the stream's own order; resuming mid-epoch re-reads
    the epoch and skips the batches already trained."""

    def __init__(self, dataset, batch_size: int, make: BatchMaker, *, device: torch.device, num_workers: int = 0):
        from torch.utils.data import DataLoader

        self.dataset, self.device, self._batch_size, self.make = dataset, device, batch_size, make
        self.num_samples = _size(dataset)
        self.loader = DataLoader(dataset, batch_size=batch_size, collate_fn=list, num_workers=num_workers,
                                 pin_memory=device.type == "cuda")

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def __len__(self) -> int:
        return -(-self.num_samples // self._batch_size)

    def epoch_stats(self, epoch: int) -> dict[str, float]:
        return {}

    def epoch(self, epoch: int, start_batch: int = 0):
        from kiln.data.loaders import to_device

        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        non_blocking = self.device.type == "cuda"
        for b, samples in enumerate(self.loader):
            if b < start_batch:
                continue
            first = b * self._batch_size
            inputs, targets = self.make(samples, lambda: list(range(first, first + len(samples))))
            yield to_device(inputs, self.device, non_blocking), to_device(targets, self.device, non_blocking)


def planned_batches(samples: Dataset, split: str, count: int, num_classes: int, cfg: DataConfig,
                    request: DataRequest, collate: Callable | None = None) -> Batches:
    """A split's samples (a Dataset of (x, y) of `count` samples) batched through kiln's plan: the split's order
    (shuffled for training), each batch's randomness seeded by (seed, epoch, batch), `collate` (default: PyTorch's
    for the inputs, the task's for the targets) — what your own Dataset shares with kiln's sources of masks and
    boxes."""
    make = BatchMaker(collate, split, num_classes, request.task)
    sampler = sampler_for(split == "train", count, cfg, request)
    return LoaderBatches(SampleBatches(samples, make, request.seed), sampler=sampler, device=request.device,
                         seed=request.seed, num_workers=cfg.num_workers)


class SampleBatches(Dataset):
    """A user Dataset behind kiln's batch plan: fetches one batch of samples, collates them (the user's collate
    or PyTorch's), and splits the result into (inputs, targets); targets is None for unlabelled data."""

    def __init__(self, dataset: Dataset, make: BatchMaker, seed: int):
        self.dataset, self.make, self.seed = dataset, make, seed

    def __len__(self) -> int:
        return _size(self.dataset)

    def __getitems__(self, indices) -> tuple[Any, torch.Tensor | None]:
        in_worker = torch.utils.data.get_worker_info() is not None
        with _rng_for(self.seed, getattr(indices, "epoch", 0), getattr(indices, "batch", 0), restore=not in_worker):
            samples = [self.dataset[i] for i in indices]
        return self.make(samples, lambda: self.own(indices))

    def own(self, indices) -> list[int]:
        """The indices the user's Dataset knows these samples by (through kiln's seeded Subsets), for messages."""
        return [own_index(self.dataset, int(i)) for i in indices]


def own_index(ds: Dataset, i: int) -> int:
    """The index of sample i of `ds` in the user's own Dataset (through kiln's seeded Subsets)."""
    while isinstance(ds, Subset):
        i, ds = int(ds.indices[i]), ds.dataset
    return i


def _default_collate(samples: list, indices: list[int], split: str) -> Any:
    try:
        return default_collate(samples)
    except (RuntimeError, TypeError) as e:
        shapes = ", ".join(f"sample {i}: {describe(s)}" for i, s in list(zip(indices, samples))[:4])
        raise KilnError(f"the {split} samples cannot be batched ({first_line(e)}): {shapes}. Samples of "
                        "different sizes need data.collate (e.g. a function that pads), or resizing in the "
                        "Dataset") from None


def _collate_targets(labels: list, task: str, own: Callable[[], list[int]], split: str) -> Any:
    try:
        return task_class(task).collate_targets(labels)
    except (RuntimeError, TypeError) as e:
        shapes = ", ".join(f"sample {i}: {describe(y)}" for i, y in list(zip(own(), labels))[:4])
        raise KilnError(f"the {split} targets cannot be batched ({first_line(e)}): {shapes}. Targets that are not "
                        f"numbers or same-size tensors need the task's collate_targets (task {task})") from None


def split_sample(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """A collated batch -> (inputs, targets): (x, y), a dict with input/label, or x alone (no targets)."""
    if isinstance(batch, dict) and "input" in batch:
        return batch["input"], batch.get("label")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def _checked_targets(targets: Any, own: Callable[[], list[int]], num_classes: int, split: str,
                     task: str) -> torch.Tensor:
    """Targets as the task needs them (class indices, multi-hot float vectors, float values); `own()` gives the
    samples' indices for a message (computed only then)."""
    try:
        targets = torch.as_tensor(targets)
        shape = f"the {split} targets of samples {own()[:4]}... have shape {tuple(targets.shape)} and dtype {targets.dtype}"
    except (TypeError, ValueError, RuntimeError):  # not numbers (a list of dicts per sample): the task's to check
        shape = f"the {split} targets of samples {own()[:4]}... are {describe(targets)}"
    try:
        return task_class(task).checked_batch(targets, num_classes, shape, lambda i: own()[i], split)
    except AttributeError:  # one of kiln's tasks, given targets that are not tensors
        raise KilnError(f"{shape}; task {task} needs tensors of class indices, label vectors or values") from None


def first_batch_samples(batches: Batches, count: int = 4) -> list[int]:
    """The user's own indices of the first samples of epoch 0's first batch (for messages before training); for a
    stream, their positions in it; empty for batches that are not a user Dataset's."""
    if isinstance(batches, StreamBatches):
        return list(range(min(count, batches.batch_size)))
    if not isinstance(batches, LoaderBatches) or not isinstance(batches.loader.dataset, SampleBatches):
        return []
    return batches.loader.dataset.own(batches.sampler.batches(0)[0][:count])


def describe(obj: Any) -> str:
    """Shapes of a sample or batch, for messages: tensor (3, 32, 32), tuple of ..., dict of ...."""
    if isinstance(obj, torch.Tensor):
        return f"tensor {tuple(obj.shape)} {str(obj.dtype).removeprefix('torch.')}"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in obj) + ")"
    return type(obj).__name__


def predict_batches(cfg: DataConfig, num_classes: int, file: Any, device: torch.device,
                    task: str = "multiclass") -> Batches:
    """`kiln predict RUN [--file F]` on a run trained on your own Dataset: the Dataset built with split="predict"
    (and file=F when given), its samples in order; labels, if it returns any, are ignored."""
    from kiln.core.user_code import resolve

    cls = resolve("data.name", cfg.name, Dataset, functions=False)
    if not _takes_split(cls):
        raise KilnError(f"kiln predict builds {cfg.name} with split='predict'; give its constructor a `split` "
                        "argument (and a `file` argument to read the file passed with --file)")
    kwargs: dict[str, Any] = {**cfg.args, "split": "predict"}
    if file is not None:
        if "file" not in inspect.signature(cls).parameters:
            raise KilnError(f"--file: {cfg.name}'s constructor takes no `file` argument to read it from")
        kwargs["file"] = str(file)
    try:
        ds = cls(**kwargs)
    except (ValueError, KeyError) as e:
        raise KilnError(f"{cfg.name} has no predict split ({first_line(e)}): make split='predict' return the samples "
                        "to predict (x alone, or (x, y))") from None
    make = BatchMaker(resolve_collate(cfg.collate), "predict", num_classes, task)
    size = eval_batch_size(cfg)
    if isinstance(ds, torch.utils.data.IterableDataset):
        return StreamBatches(ds, size, make, device=device, num_workers=cfg.num_workers)
    sampler = EpochBatchSampler(_size(ds), size, shuffle=False, drop_last=False, seed=0)
    return LoaderBatches(SampleBatches(ds, make, 0), sampler=sampler, device=device, seed=0,
                         num_workers=cfg.num_workers)
