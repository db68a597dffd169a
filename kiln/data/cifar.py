"""CIFAR-10 and CIFAR-100 from the official *binary* distribution: fixed-size records (label bytes, then a 32x32
image as 1024 red, 1024 green, 1024 blue bytes). No pickle is ever loaded; a download is checked against the
archive's published MD5 and only the expected files are extracted."""

from __future__ import annotations

import hashlib
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kiln.core.errors import KilnError
from kiln.data.spec import ImageTensors

if TYPE_CHECKING:
    import torch

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()
RECORD_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarDataset(ImageTensors):
    name: str
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    url: str
    md5: str
    subdir: str  # the folder the archive unpacks to
    train_files: tuple[str, ...]
    test_file: str
    label_bytes: int  # CIFAR-100 records carry a coarse and a fine label; kiln trains on the fine one

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file)

    def find(self, folder: Path) -> Path | None:
        for base in (folder, folder / self.subdir):
            if all((base / f).is_file() for f in self.files()):
                return base
        return None

    def describe_files(self) -> str:
        return f"{', '.join(self.files())} (the binary version, {self.subdir}/)"

    def download(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / Path(self.url).name
        part = archive.with_suffix(".part")
        urllib.request.urlretrieve(self.url, part)
        digest = hashlib.md5(part.read_bytes()).hexdigest()
        if digest != self.md5:
            part.unlink(missing_ok=True)
            raise ValueError(f"{self.url} has MD5 {digest}, expected {self.md5}: the download is corrupt; try again")
        part.replace(archive)
        wanted = {f"{self.subdir}/{f}" for f in self.files()}
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
            # Only the named regular files are extracted, so no path in the archive can reach outside `folder`.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(folder, members=members, filter="data")
            else:  # Python before 3.12 (and its backports)
                tar.extractall(folder, members=members)
        archive.unlink()

    def load(self, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (N, 3, 32, 32), labels int64) of the train or test split."""
        import torch

        names = self.train_files if split == "train" else (self.test_file,)
        parts = [read_records(folder / name, self.label_bytes) for name in names]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def read_records(path: Path, label_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    raw = np.fromfile(path, dtype=np.uint8)
    size = label_bytes + RECORD_PIXELS
    if raw.size == 0 or raw.size % size:
        raise KilnError(f"{path} is not a CIFAR binary file: {raw.size} bytes is not a whole number of "
                        f"{size}-byte records; download it again (data.download=true)")
    records = raw.reshape(-1, size)
    images = torch.from_numpy(records[:, label_bytes:].reshape(-1, 3, 32, 32).copy())
    labels = torch.from_numpy(records[:, label_bytes - 1].astype(np.int64))
    return images, labels


CIFAR10 = CifarDataset("cifar10", CIFAR10_CLASSES, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                       "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                       "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", 1)
CIFAR100 = CifarDataset("cifar100", CIFAR100_CLASSES, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                        "cifar-100-binary", ("train.bin",), "test.bin", 2)
