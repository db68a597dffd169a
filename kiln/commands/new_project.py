"""`kiln new DIR`: a small, runnable project of your own — a config wired to your code, a documented model and
Dataset, a smoke test, a README and a .gitignore. No copy of kiln's code: the project depends on kiln."""

from __future__ import annotations

from pathlib import Path

from kiln.core.errors import KilnError

TEMPLATES = ("image", "text", "folder")

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
    "folder": '''# Trains my_project.models:SmallCNN on the pictures in data/photos/<class>/ (kiln new put a few generated
# samples there; replace them with yours: any size, colour or grayscale, PNG/JPEG/...). kiln splits off a stratified
# validation and test share, decodes every image once into a cache, and resizes to image_size.
name: my_project
code_dir: ..                 # the project folder, put on the import path (relative to this file)
seed: 0
data:
  name: image_folder
  root: data/photos          # relative to where you run kiln (the project folder)
  image_size: 32             # unset: the median short side of your images, at most 224
  val_split: 0.2
  test_split: 0.2
  batch_size: 32
  augment: {resized_crop: true, scale: [0.5, 1.0], hflip: true}
model:
  name: my_project.models:SmallCNN
  args: {channels: 16}
optim: {name: adamw, lr: 0.003}
schedule: {name: cosine}
trainer: {epochs: 20}
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
    "folder": '''"""Your model: any torch.nn.Module. kiln passes `num_classes` and `in_channels` (from the images) when the
constructor takes them."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head. Input: (batch, in_channels, H, W) normalised images; output: logits."""

    def __init__(self, num_classes: int, in_channels: int = 3, channels: int = 16):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for out in (channels, 2 * channels, 4 * channels):
            blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
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

SMOKE_TEST_FOLDER = '''"""Trains one short epoch through kiln on a few generated pictures, as `kiln train` would: the wiring works
without your photos (data/ is not in version control)."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def test_one_tiny_epoch_trains_and_tests(tmp_path):
    for c, colour in enumerate(["red", "green", "blue"]):
        (tmp_path / "photos" / f"class{c}").mkdir(parents=True)
        for i in range(12):
            img = Image.new("RGB", (40 + i, 36), "gray")
            ImageDraw.Draw(img).rectangle((5 + i, 5, 25 + i, 25), fill=colour)
            img.save(tmp_path / "photos" / f"class{c}" / f"{i}.png")
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "kiln", "train", str(ROOT / "configs" / "train.yaml"),
                          f"data.root={tmp_path / 'photos'}", "trainer.epochs=1", f"log.dir={tmp_path}",
                          "--run-dir", str(run), "-q"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "KILN_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert (run / "test_metrics.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
'''

README_FOLDER = '''# my_project

A kiln project: your pictures in `data/photos/<class>/` (a few generated samples are there now), your model in
`my_project/models.py`, the run in `configs/train.yaml`.

```bash
kiln inspect configs/train.yaml --batch       # see one training batch exactly as the model receives it
kiln train configs/train.yaml                 # train; writes runs/my_project/<timestamp>/
kiln predict runs/my_project/<timestamp> data/photos/red_square --out predictions.csv
python -m pytest tests                        # the smoke test: one tiny epoch through kiln
```

Every config key is documented by `kiln schema`; `kiln train --help` lists the options. `code_dir` in the config puts
this folder on the import path, so `my_project.models:...` resolves wherever you run kiln from.
'''

GITIGNORE = "runs/\ndata/\n__pycache__/\n*.pt\n.pytest_cache/\n"


def new_project(folder: Path, template: str = "image", force: bool = False,
                from_project: Path | None = None) -> list[Path]:
    """Write the project (or, with `from_project`, a kiln config for a pytorch-template project); returns the files
    written."""
    if template not in TEMPLATES:
        raise KilnError(f"--template {template!r}: choose {', '.join(TEMPLATES)}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise KilnError(f"{folder} is not empty; choose a new folder, or pass --force to write into it "
                        "(files of the same name are replaced)")
    if from_project is not None:
        return _from_template_project(folder, Path(from_project))
    files = {
        "configs/train.yaml": CONFIG[template], "my_project/__init__.py": "", "my_project/models.py": MODELS[template],
        "tests/test_smoke.py": SMOKE_TEST_FOLDER if template == "folder" else SMOKE_TEST,
        "README.md": README_FOLDER if template == "folder" else README, ".gitignore": GITIGNORE,
    }
    if template in DATA:  # the folder template reads pictures, not a Dataset of yours
        files["my_project/data.py"] = DATA[template]
    written = _write_files(folder, files)
    if template == "folder":
        written.append(write_sample_photos(folder / "data" / "photos"))
    return written


def write_sample_photos(folder: Path, per_class: int = 80) -> Path:
    """Generated colour pictures in class folders (a red square, a green disc, a blue cross at random places and
    sizes, PNG and JPEG), so the folder template trains at once. Returns the folder."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    for name, colour in (("red_square", (220, 40, 40)), ("green_disc", (40, 180, 60)), ("blue_cross", (40, 60, 220))):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = rng.randint(40, 72), rng.randint(40, 72)
            img = Image.new("RGB", (w, h), (rng.randint(90, 200), rng.randint(90, 200), rng.randint(90, 200)))
            draw = ImageDraw.Draw(img)
            r = rng.randint(6, min(w, h) // 3)
            x, y = rng.randint(r, w - r), rng.randint(r, h - r)
            if name == "red_square":
                draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
            elif name == "green_disc":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
            else:
                draw.rectangle((x - r, y - r // 3, x + r, y + r // 3), fill=colour)
                draw.rectangle((x - r // 3, y - r, x + r // 3, y + r), fill=colour)
            img.save(folder / name / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return folder


def _from_template_project(folder: Path, project: Path) -> list[Path]:
    """configs/train.yaml equivalent to a pytorch-template project's config.json (its code stays where it is), a
    README listing what was mapped differently or not at all, and a .gitignore."""
    import yaml

    from kiln.commands.migrate import migrate

    m = migrate(project, folder / "configs")
    header = "".join(f"# {line}\n" for line in [f"Brought over from {Path(project).resolve() / 'config.json'} by "
                                                  "`kiln new --from`."] + [f"- {n}" for n in m.notes])
    files = {"configs/train.yaml": header + yaml.safe_dump(m.config, sort_keys=False),
             "README.md": MIGRATED_README.format(project=Path(project).resolve(),
                                                 notes="\n".join(f"- {n}" for n in m.notes) or "- (none)"),
             ".gitignore": GITIGNORE}
    return _write_files(folder, files)


def _write_files(folder: Path, files: dict[str, str]) -> list[Path]:
    """Each `files` entry (path relative to `folder` -> text) written; the paths, in order."""
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


MIGRATED_README = """# kiln config for {project}

`configs/train.yaml` is the kiln equivalent of that project's `config.json`. The project's own code is used where it
is (`code_dir` in the config points at it): the model class from `model/model.py`, a loss from `model/loss.py`.

```bash
kiln train configs/train.yaml        # train (flags and key=value overrides may follow)
kiln test runs/<name>/<timestamp>    # evaluate best.pt on the test split
```

Mapped differently, or not at all:
{notes}
"""
