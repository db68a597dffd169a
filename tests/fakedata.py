"""Small, learnable image datasets written in the real IDX format (gzip), for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from kiln.data.idx import write_idx


def make_images(n: int, num_classes: int = 10, seed: int = 0, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise plus a bright 6x6 block whose position encodes the class: easy to learn, not trivial."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 90, (n, size, size), generator=g).to(torch.float32)
    for c in range(num_classes):
        r, col = 3 + 7 * (c // 4) , 3 + 6 * (c % 4)
        images[labels == c, r:r + 6, col:col + 6] += 150
    return images.clamp(0, 255).to(torch.uint8), labels.to(torch.uint8)


def write_idx_dataset(folder: Path, n_train: int = 480, n_test: int = 160, num_classes: int = 10,
                      gz: bool = True) -> Path:
    """The four MNIST-family files in `folder` (train-* and t10k-*)."""
    suffix = ".gz" if gz else ""
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = make_images(n, num_classes, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


TOPICS = {
    0: ["election", "minister", "parliament", "treaty", "embassy"],
    1: ["match", "goal", "coach", "season", "tournament"],
    2: ["shares", "profit", "market", "investors", "merger"],
    3: ["software", "chip", "internet", "robot", "quantum"],
}
FILLER = ["the", "a", "of", "in", "on", "today", "report", "said", "new", "after", "über", "naïve", "café"]


def make_news(n: int, seed: int) -> list[tuple[int, str, str]]:
    """(1-based class, title, description) rows; the topic words make the class learnable."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.randrange(4)
        words = [rng.choice(TOPICS[label]) for _ in range(rng.randint(1, 3))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(2, 30))]
        rng.shuffle(words)
        title = " ".join(words[:4]).capitalize()
        description = " ".join(words[4:])
        if i % 7 == 0:
            description = f'He said "{description}", and more, {rng.choice(FILLER)}'  # quotes and commas
        if i % 11 == 0:
            description = ""  # empty description
        rows.append((label + 1, title, description))
    return rows


def write_ag_news(folder: Path, n_train: int = 400, n_test: int = 120) -> Path:
    """train.csv / test.csv in the official AG News layout: no header, every field quoted, "" escapes."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.csv", n_train, 1), ("test.csv", n_test, 2)):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(make_news(n, seed))
    return folder
