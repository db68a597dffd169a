"""Batch sources behind one small interface, so the training loop never sees a DataLoader.

A `Batches` object yields (inputs, targets) already on the training device and already transformed.
Its order is a pure function of (seed, epoch) and it can start mid-epoch, which is all exact resume
needs. Under DDP each rank takes its own slice of the same epoch plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kiln.config import DataConfig
from kiln.data.transforms import seed_for


class Batches(Protocol):
    """What the training loop uses of a batch source; every source (resident, DataLoader, text) has it all."""

    num_samples: int  # samples in the split (all ranks together)

    @property
    def batch_size(self) -> int:
        """Samples per batch on this rank (the last batch may be smaller)."""

    def __len__(self) -> int:
        """Batches per epoch (on this rank)."""

    def epoch_stats(self, epoch: int) -> dict[str, float]:
        """Statistics of this epoch's plan, logged as train/<name> (e.g. text padding); {} when there are none."""

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Any, torch.Tensor]]:
        """Yield this epoch's batches from `start_batch` on, on the device and transformed."""


class TensorImages(Dataset):
    """An in-memory image dataset; `__getitems__` fetches a whole batch with one index op."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert len(images) == len(labels)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]


class EpochBatchSampler(Sampler):
    """Index batches of one epoch: a seeded permutation (or the natural order), sliced per rank.

    Shuffled (training) epochs give every rank the same number of samples, dropping at most world_size - 1
    per epoch (different ones each epoch), so no rank waits for a batch another never gets. Evaluation
    epochs keep every sample: the ranks together cover the split exactly once.
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.used = num_samples - num_samples % world_size if shuffle else num_samples
        self.per_rank = len(range(rank, self.used, world_size))
        self.drop_last = drop_last and self.per_rank >= batch_size  # never drop a whole tiny dataset
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(seed_for(self.seed, epoch, 0x5EED)))

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's sample order for `epoch`; batch b is order[b * batch_size:(b + 1) * batch_size]. Dealt
        round-robin (rank r: r, r + W, ...), which kiln.core.dist.gather_samples undoes."""
        return self.permutation(epoch)[:self.used][self.rank::self.world_size]

    def batches(self, epoch: int) -> list[torch.Tensor]:
        order = self.order(epoch)
        return [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]

    def __len__(self) -> int:
        return self.per_rank // self.batch_size if self.drop_last else -(-self.per_rank // self.batch_size)

    def __iter__(self):
        for b, batch in enumerate(self.batches(self.epoch)[self.start_batch:], start=self.start_batch):
            yield BatchIndices(batch.tolist(), self.epoch, b)


class WeightedEpochSampler(EpochBatchSampler):
    """data.sampler: weighted — each epoch draws as many samples as the split has, with replacement, each with
    probability proportional to 1 / (its class's count): the classes come out balanced on average. The draw is a
    pure function of (seed, epoch), so resume is exact; under DDP there is one global draw and each rank takes its
    slice of it (never a per-rank sampler that silently draws differently)."""

    def __init__(self, labels: torch.Tensor, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(len(labels), batch_size, shuffle=True, drop_last=True, seed=seed, rank=rank,
                         world_size=world_size)
        counts = torch.bincount(labels).double()
        self.weights = (1.0 / counts.clamp_min(1))[labels]

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed_for(self.seed, epoch, 0x3E16))
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)


class GroupedEpochSampler(EpochBatchSampler):
    """Training order for samples read in groups (the tar shards of a WebDataset): each epoch the groups in a
    seeded order, dealt out to the ranks (each rank reads its own groups: to the one with the fewest samples so
    far), evened out so every rank has the same count (the rest of a rank over its share goes to those under it),
    then each rank's stream shuffled through a seeded buffer of `buffer` samples, as WebDataset's shuffle does.
    Together the ranks see every sample once per epoch (but at most world_size - 1), and the order is a pure
    function of (seed, epoch, rank): a resumed run starts at the very sample it stopped at."""

    def __init__(self, groups: torch.Tensor, batch_size: int, *, buffer: int, seed: int, rank: int = 0,
                 world_size: int = 1, drop_last: bool = True):
        super().__init__(len(groups), batch_size, shuffle=True, drop_last=drop_last, seed=seed, rank=rank,
                         world_size=world_size)
        self.buffer = buffer
        ids, inverse = torch.unique(groups, return_inverse=True)
        order = torch.argsort(inverse, stable=True)  # each group's samples in their order within it
        self.members = list(order.split(torch.bincount(inverse, minlength=len(ids)).tolist()))

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed_for(self.seed, epoch, 0x5A4D))
        loads = [0] * self.world_size
        streams: list[list[torch.Tensor]] = [[] for _ in range(self.world_size)]
        for group in torch.randperm(len(self.members), generator=g).tolist():
            r = loads.index(min(loads))
            streams[r].append(self.members[group])
            loads[r] += len(self.members[group])
        flat = [torch.cat(s) if s else torch.empty(0, dtype=torch.long) for s in streams]
        share = self.per_rank
        spare = torch.cat([f[share:] for f in flat])  # taken by the ranks under their share, in rank order
        before = sum(max(0, share - len(f)) for f in flat[:self.rank])
        mine = torch.cat([flat[self.rank][:share], spare[before:before + max(0, share - len(flat[self.rank]))]])
        return _buffer_shuffle(mine, self.buffer, seed_for(self.seed, epoch, 0xB0FF + self.rank))


def _buffer_shuffle(stream: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """WebDataset's shuffle buffer, seeded: fill it with `size` samples, then for each next one emit a random
    sample of the buffer and put the new one in its place; at the end emit what is left in random order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    items = stream.tolist()
    buffer, out = items[:size], []
    picks = rng.random(len(items))
    for i, item in enumerate(items[size:], start=size):
        j = int(picks[i] * len(buffer))
        out.append(buffer[j])
        buffer[j] = item
    out += [buffer[j] for j in rng.permutation(len(buffer)).tolist()]
    return torch.tensor(out, dtype=torch.long)


class BatchIndices(list):
    """One batch's sample indices, and which (epoch, batch) they are: a Dataset can seed per batch from it."""

    def __init__(self, indices: list[int], epoch: int, batch: int):
        super().__init__(indices)
        self.epoch, self.batch = epoch, batch


def batch_len(obj: Any) -> int:
    """How many samples a batch of targets (or inputs) holds: a tensor's first dimension, a list's length (targets
    that are not tensors: a list of dicts per sample), a dict's first entry's."""
    if isinstance(obj, torch.Tensor):
        return int(obj.shape[0]) if obj.ndim else 1
    if isinstance(obj, dict):
        return batch_len(next(iter(obj.values())))
    return len(obj)


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors, and tuples/lists/dicts of them (and anything with .to, e.g. a TextBatch), on `device`."""
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    if hasattr(obj, "to"):
        return obj.to(device, non_blocking=non_blocking)
    return obj


class BucketBatchSampler(EpochBatchSampler):
    """Batches of similar-length samples: sort chunks of a seeded permutation by length, then shuffle the
    batches. Less padding, still a pure function of (seed, epoch). Ranks take every world_size-th batch."""

    def __init__(self, lengths: torch.Tensor, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 chunk_batches: int = 50):
        super().__init__(len(lengths), batch_size, shuffle=True, drop_last=False, seed=seed)
        self.lengths, self.chunk = lengths, batch_size * chunk_batches
        self.rank, self.world_size = rank, world_size
        self.num_batches = -(-len(lengths) // batch_size) // world_size  # the same on every rank

    def __len__(self) -> int:
        return self.num_batches

    def batches(self, epoch: int) -> list[torch.Tensor]:
        perm = self.permutation(epoch)
        all_batches = []
        for start in range(0, len(perm), self.chunk):
            chunk = perm[start:start + self.chunk]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            all_batches += list(chunk.split(self.batch_size))
        g = torch.Generator().manual_seed(seed_for(self.seed, epoch, 0xB0C7))
        shuffled = [all_batches[i] for i in torch.randperm(len(all_batches), generator=g).tolist()]
        return shuffled[self.rank::self.world_size][:self.num_batches]


def _already_batched(batch):
    return batch


class SampledBatches:
    """What every batch source shares: its epochs are planned by an `EpochBatchSampler`."""

    sampler: EpochBatchSampler

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    def epoch_stats(self, epoch: int) -> dict[str, float]:
        return {}


class LoaderBatches(SampledBatches):
    """The DataLoader path: a dataset whose `__getitems__` builds whole batches (optionally in worker
    processes); `transform` then runs on the device (images: normalise + augment)."""

    def __init__(self, dataset: Dataset, *, sampler: EpochBatchSampler, device: torch.device, seed: int,
                 transform: Callable | None = None, num_workers: int = 0):
        self.num_samples, self.sampler = len(dataset), sampler  # type: ignore[arg-type]  # map-style: sized
        self.loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=_already_batched,
                                 num_workers=num_workers, pin_memory=device.type == "cuda",
                                 persistent_workers=num_workers > 0,
                                 # Its own generator: creating an iterator must not draw from the global RNG,
                                 # or dropout after a mid-epoch resume would see different random numbers.
                                 generator=torch.Generator().manual_seed(seed))
        self.transform, self.device, self.seed = transform, device, seed

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Any, torch.Tensor]]:
        self.sampler.set_epoch(epoch, start_batch)
        non_blocking = self.device.type == "cuda"
        for b, (inputs, labels) in enumerate(self.loader, start=start_batch):
            inputs = to_device(inputs, self.device, non_blocking)
            labels = to_device(labels, self.device, non_blocking)
            if self.transform is not None:
                inputs = self.transform(inputs, _generator(self.transform, self.device, self.seed, epoch, b))
            yield inputs, labels


class ResidentBatches(SampledBatches):
    """The resident path: the whole uint8 dataset lives on the training device; batches are gathered,
    converted and augmented there. No DataLoader, no workers, no host-to-device copy per batch.

    The order comes from the same sampler as the DataLoader path (drawn on the host, one small index copy
    per epoch), so both paths see identical batches for the same seed.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, sampler: EpochBatchSampler,
                 transform: Callable, device: torch.device, seed: int):
        self.num_samples, self.sampler = len(labels), sampler
        self.images, self.labels = images.to(device), labels.to(device)  # (N, C, H, W) uint8, (N,) int64
        self.transform, self.device, self.seed = transform, device, seed

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.sampler.order(epoch).to(self.device, non_blocking=True)
        size = self.sampler.batch_size
        for b in range(start_batch, len(self)):
            idx = order[b * size:(b + 1) * size]
            generator = _generator(self.transform, self.device, self.seed, epoch, b)
            yield self.transform(self.images[idx], generator), self.labels[idx]


def _generator(transform, device: torch.device, seed: int, epoch: int, batch: int) -> torch.Generator | None:
    """Augmentation randomness as a pure function of (seed, epoch, batch): resuming needs no saved state."""
    if not getattr(transform, "augments", False):
        return None
    return torch.Generator(device).manual_seed(seed_for(seed, epoch, batch))


def split_labels(batches: Batches) -> torch.Tensor | None:
    """Every label of a split without reading its inputs (None when the source cannot tell)."""
    if isinstance(batches, ResidentBatches):
        return batches.labels.cpu()
    dataset = getattr(getattr(batches, "loader", None), "dataset", None)
    labels = getattr(dataset, "labels", None)
    return labels if isinstance(labels, torch.Tensor) else None



def split_targets(batches: Batches) -> torch.Tensor:
    """Every target of a split, in order (read once from your own Dataset, which cannot give them without its
    inputs)."""
    labels = split_labels(batches)
    if labels is None:
        labels = torch.cat([y.cpu() for _, y in batches.epoch(0)])
    return labels

def eval_batch_size(cfg: DataConfig) -> int:
    """Validation and test batches: no gradients, so 4x the training batch fits unless set."""
    return cfg.eval_batch_size or 4 * cfg.batch_size


def choose_loader(setting: str, num_bytes: int, device: torch.device, max_mb: float | None) -> str:
    """`loader: auto` keeps the data resident on the device when it fits the budget."""
    if setting != "auto":
        return setting
    if max_mb is not None:
        budget = max_mb * 2**20
    elif device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] / 4  # leave the rest to activations, weights, optimizer
    elif device.type == "cpu":
        budget = float("inf")  # the tensors are in host memory whichever path reads them
    else:
        budget = 2 * 2**30
    return "resident" if num_bytes <= budget else "dataloader"


def wait_advice(data: Any, num_workers: int) -> str:
    """What to change when training waits for its batches (`data`: the run's `Data`)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if data.loader == "resident":  # gathered and augmented on the device between steps
        return ("the batches are gathered and augmented on the training device between steps: lighter "
                "augmentation (data.augment.preset, random_erasing) or a larger data.batch_size")
    tips = []
    if num_workers < cores:
        tips.append(f"set data.num_workers={min(cores, 8)} ({num_workers} now, {cores} cores here)")
    if data.info.kind == "image":
        tips.append("keep the decoded images in memory: data.cache=on with data.cache_max_mb above the store's size")
    tips.append("kiln train --profile shows where each step's time goes")
    return "; ".join(tips)
