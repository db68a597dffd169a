"""Datasets and models as users write them (a test's stand-in for `my_pkg/data.py`)."""

import random

import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset


def _blob(label: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(2, 8, 8, generator=g) * 0.3
    x[label % 2, 2 * label:2 * label + 2, :] += 2.0  # learnable: the class is where the bright rows are
    return x


class Blobs(Dataset):
    """Takes `split`; random noise in __getitem__ (the kind of augmentation users write)."""

    classes = ["a", "b", "c"]

    def __init__(self, split: str, n: int = 96, noise: float = 0.1):
        if split not in ("train", "val", "test"):
            raise ValueError(f"no {split} split")
        g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
        self.labels = torch.randint(0, 3, (n if split == "train" else n // 3,), generator=g)
        self.images = torch.stack([_blob(int(y), g) for y in self.labels])
        self.noise = noise

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        jitter = random.random() * self.noise  # python randomness: must be reproducible per batch
        return self.images[i] + jitter, int(self.labels[i])


class NoSplit(Dataset):
    """No `split` argument and no class attributes: kiln takes the validation split and needs data.num_classes."""

    def __init__(self, n: int = 90, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.images = torch.stack([_blob(int(y), g) for y in self.labels])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input": self.images[i], "label": self.labels[i]}


class TwoInputs(NoSplit):
    """Samples whose input is a dict of tensors: the model takes them as keyword arguments."""

    num_classes = 3

    def __getitem__(self, i):
        return {"input": {"left": self.images[i, 0], "right": self.images[i, 1]}, "label": self.labels[i]}


class Sequences(Dataset):
    """Variable-length samples: they need the user's padding collate."""

    num_classes = 2

    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(3)
        self.items = [(torch.randint(1, 20, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g), i % 2)
                      for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def pad_collate(batch):
    """The collate_fn every text tutorial writes: pad to the longest, keep the lengths."""
    seqs, labels = zip(*batch)
    lengths = torch.tensor([len(s) for s in seqs])
    padded = nn.utils.rnn.pad_sequence(list(seqs), batch_first=True)
    return (padded, lengths), torch.tensor(labels)


class BadLabels(NoSplit):
    num_classes = 3

    def __getitem__(self, i):
        return self.images[i], 7 if i == 5 else int(self.labels[i])


class Unlabelled(NoSplit):
    num_classes = 3

    def __getitem__(self, i):
        return self.images[i]


class Stream(IterableDataset):
    """No split argument and no length: kiln must say what it needs."""

    num_classes = 3

    def __iter__(self):
        yield from ()


class BlobStream(IterableDataset):
    """A stream with `split`, a length and `set_epoch`: each epoch its own seeded order (the stream's own)."""

    classes = ["a", "b", "c"]

    def __init__(self, split: str, n: int = 96):
        self.blobs = Blobs(split, n)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.blobs)

    def __iter__(self):
        order = torch.randperm(len(self.blobs), generator=torch.Generator().manual_seed(self.epoch))
        for i in order.tolist():
            yield self.blobs.images[i], int(self.blobs.labels[i])


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, channels: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class TwoInputNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(2 * 64, num_classes)

    def forward(self, left, right):
        return self.fc(torch.cat([left.flatten(1), right.flatten(1)], 1))


class SeqNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(20, 8, padding_idx=0)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, ids, lengths):
        return self.fc(self.embed(ids).sum(1) / lengths[:, None])


class WithPredict(Dataset):
    """Blobs with a "predict" split: unlabelled samples, generated or read from `file` (a tensor saved with
    torch.save), as a user's Dataset for new data looks."""

    classes = ["a", "b", "c"]

    def __init__(self, split: str, n: int = 96, file: str | None = None):
        self.images = torch.load(file) if file else Blobs("test" if split == "predict" else split, n).images
        self.labels = None if split == "predict" else Blobs(split, n).labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i] if self.labels is None else (self.images[i], int(self.labels[i]))


class TaggedBlobs(Blobs):
    """Multilabel: each sample a multi-hot vector over `classes` (the blob's class, and `bright` when brightened)."""

    classes = ["a", "b", "c", "bright"]

    def __getitem__(self, i):
        x, label = super().__getitem__(i)
        hot = torch.zeros(4)
        hot[label] = 1.0
        if i % 2:
            x, hot[3] = x + 1.0, 1.0
        return x, hot


class VoteBlobs(Blobs):
    """Blobs labelled by annotators: each sample's target is a list of 1-4 votes, {"label": class, "weight": how
    sure the annotator was} — not a tensor, and of varying length (task: owntasks:Votes)."""

    def __init__(self, split: str, n: int = 96, noise: float = 0.1):
        super().__init__(split, n, noise)
        g = torch.Generator().manual_seed(10 + len(self.labels))
        self.votes = []
        for y in self.labels.tolist():
            count = int(torch.randint(1, 5, (1,), generator=g))
            wrong = torch.rand(count, generator=g) < 0.2  # a fifth of the votes are for another class
            labels = [(y + 1) % 3 if w else y for w in wrong.tolist()]
            weights = (0.5 + torch.rand(count, generator=g) / 2).tolist()
            self.votes.append([{"label": c, "weight": round(w, 3)} for c, w in zip(labels, weights)])

    def __getitem__(self, i):
        x, _ = super().__getitem__(i)
        return x, self.votes[i]


class SlowBlobs(Blobs):
    """Blobs that take a while to load, as a dataset decoding large files in the main process does."""

    def __getitem__(self, i):
        import time

        time.sleep(0.012)  # about 1.2 s per epoch of 96 samples
        return super().__getitem__(i)
