"""`kiln new DIR`: a small, runnable project of your own — a config wired to your code, a documented model and
Dataset, a smoke test, a README and a .gitignore. No copy of kiln's code: the project depends on kiln."""

from __future__ import annotations

from pathlib import Path

from kiln.errors import KilnError

TEMPLATES = ("image", "text")

CONFIG = {
    "image": '''# Trains my_project.models:SmallCNN on my_project.data:ShapesDataset: generated images of squares, discs and
# crosses, so it runs at once. Replace the Dataset with your own (keep the split argument and the (x, y) samples).
name: my_project
code_dir: ..                 # the project folder, put on the import path (relative to this file)
seed: 0
data:
  name: my_project.data:ShapesDataset
  args: {n: 600}             # constructor arguments of your Dataset
  batch_size: 32
model:
  name: my_project.models:SmallCNN
  args: {channels: 16}
optim: {name: adamw, lr: 0.003}
schedule: {name: cosine}
trainer: {epochs: 5}
''',
    "text": '''# Trains my_project.models:BagOfWords on my_project.data:TopicsDataset: generated sentences about three topics, so
# it runs at once. Replace the Dataset with your own; data.collate pads the variable-length token lists.
name: my_project
code_dir: ..                 # the project folder, put on the import path (relative to this file)
seed: 0
data:
  name: my_project.data:TopicsDataset
  args: {n: 900}
  batch_size: 32
  collate: my_project.data:pad_collate
model:
  name: my_project.models:BagOfWords
  args: {embed_dim: 32}
optim: {name: adamw, lr: 0.01}
schedule: {name: cosine}
trainer: {epochs: 5}
''',
}

MODELS = {
    "image": '''"""Your model: any torch.nn.Module. kiln passes `num_classes` (from the data) when the constructor takes it."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head. Input: (batch, in_channels, H, W) float images; output: logits."""

    def __init__(self, num_classes: int, in_channels: int = 1, channels: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
''',
    "text": '''"""Your model: any torch.nn.Module. kiln passes `num_classes` (from the data) when the constructor takes it."""

import torch
from torch import nn

from my_project.data import VOCAB


class BagOfWords(nn.Module):
    """Mean of word embeddings -> linear. Inputs (from pad_collate): ids (batch, T) padded with 0, lengths (batch,)."""

    def __init__(self, num_classes: int, embed_dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), embed_dim, padding_idx=0)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).sum(1) / lengths[:, None].to(torch.float32))
''',
}

DATA = {
    "image": '''"""Your data: a torch.utils.data.Dataset. kiln calls it with split="train", "val" and "test" (a split you do not
have: raise ValueError). Samples are (x, y) — or x alone for data without labels, used for prediction only."""

import torch
from torch.utils.data import Dataset


class ShapesDataset(Dataset):
    """Generated 24x24 gray images of a square, a disc or a cross at a random place. Replace with your images."""

    classes = ["square", "disc", "cross"]  # kiln reads the class names from here

    def __init__(self, split: str, n: int = 600, size: int = 24):
        seeds = {"train": 0, "val": 1, "test": 2}
        if split not in seeds:
            raise ValueError(f"no {split!r} split")
        count = n if split == "train" else max(30, n // 5)
        g = torch.Generator().manual_seed(seeds[split])
        self.labels = torch.randint(0, 3, (count,), generator=g)
        self.images = torch.stack([self._draw(int(y), size, g) for y in self.labels])

    @staticmethod
    def _draw(label: int, size: int, g: torch.Generator) -> torch.Tensor:
        img = torch.rand(1, size, size, generator=g) * 0.3
        r, c = (int(v) for v in torch.randint(5, size - 5, (2,), generator=g))
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        if label == 0:
            img[0, r - 4:r + 4, c - 4:c + 4] += 0.7
        elif label == 1:
            img[0][(rows - r) ** 2 + (cols - c) ** 2 <= 16] += 0.7
        else:
            img[0, r - 1:r + 2, c - 4:c + 4] += 0.7
            img[0, r - 4:r + 4, c - 1:c + 2] += 0.7
        return img

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])  # x: (1, 24, 24) float, y: the class index
''',
    "text": '''"""Your data: a torch.utils.data.Dataset. kiln calls it with split="train", "val" and "test" (a split you do not
have: raise ValueError). Samples are (x, y); variable-length x needs a collate function (pad_collate below)."""

import random

import torch
from torch import nn
from torch.utils.data import Dataset

TOPICS = {"sport": ["match", "goal", "team", "coach"], "science": ["atom", "cell", "theory", "lab"],
          "money": ["bank", "price", "market", "loan"]}
FILLER = ["the", "a", "new", "said", "today", "of", "in"]
VOCAB = ["<pad>"] + sorted({w for words in TOPICS.values() for w in words} | set(FILLER))
INDEX = {w: i for i, w in enumerate(VOCAB)}


class TopicsDataset(Dataset):
    """Generated sentences about three topics. Replace with your texts (and your tokenizer and vocabulary)."""

    classes = list(TOPICS)

    def __init__(self, split: str, n: int = 900):
        seeds = {"train": 0, "val": 1, "test": 2}
        if split not in seeds:
            raise ValueError(f"no {split!r} split")
        rng = random.Random(seeds[split])
        self.samples = []
        for _ in range(n if split == "train" else max(60, n // 5)):
            label = rng.randrange(len(TOPICS))
            words = rng.choices(TOPICS[self.classes[label]], k=rng.randint(1, 3)) + rng.choices(FILLER, k=rng.randint(2, 9))
            rng.shuffle(words)
            self.samples.append((torch.tensor([INDEX[w] for w in words]), label))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.samples[i]  # x: token ids of any length, y: the class index


def pad_collate(batch):
    """Pads a batch of token-id tensors to the longest: ((ids (B, T), lengths (B,)), labels (B,))."""
    ids, labels = zip(*batch)
    lengths = torch.tensor([len(x) for x in ids])
    return (nn.utils.rnn.pad_sequence(list(ids), batch_first=True), lengths), torch.tensor(labels)
''',
}

SMOKE_TEST = '''"""Trains one short epoch through kiln, as `kiln train` would: the project's wiring works."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_one_tiny_epoch_trains_and_tests(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "kiln", "train", str(ROOT / "configs" / "train.yaml"),
                          "trainer.epochs=1", f"log.dir={tmp_path}", "--run-dir", str(run), "-q"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert (run / "test_metrics.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
'''

README = '''# my_project

A kiln project: your model in `my_project/models.py`, your data in `my_project/data.py`, the run in
`configs/train.yaml`.

```bash
kiln train configs/train.yaml                 # train; writes runs/my_project/<timestamp>/
kiln test runs/my_project/<timestamp>         # evaluate best.pt on the test split
python -m pytest tests                        # the smoke test: one tiny epoch through kiln
```

Every config key is documented by `kiln schema`; `kiln train --help` lists the options. `code_dir` in the config puts
this folder on the import path, so `my_project.models:...` resolves wherever you run kiln from.
'''

GITIGNORE = "runs/\ndata/\n__pycache__/\n*.pt\n.pytest_cache/\n"


def new_project(folder: Path, template: str = "image", force: bool = False) -> list[Path]:
    """Write the project; returns the files written."""
    if template == "folder":
        raise KilnError("--template folder needs kiln's image-folder data source, which is not there yet; use "
                        "--template image and point its Dataset at your files")
    if template not in TEMPLATES:
        raise KilnError(f"--template {template!r}: choose {', '.join(TEMPLATES)}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise KilnError(f"{folder} is not empty; choose a new folder, or pass --force to write into it "
                        "(files of the same name are replaced)")
    files = {
        "configs/train.yaml": CONFIG[template], "my_project/__init__.py": "", "my_project/models.py": MODELS[template],
        "my_project/data.py": DATA[template], "tests/test_smoke.py": SMOKE_TEST, "README.md": README,
        ".gitignore": GITIGNORE,
    }
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
