"""Registered datasets: names, where their files live, how to load them.

Each entry is a small spec; `locate` finds its files in the documented order
(reading them is the format's job: kiln.data.idx, kiln.data.csv_rows).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from kiln.core.errors import KilnError
from kiln.core.user_code import names_code
from kiln.data.cifar import CIFAR10, CIFAR100
from kiln.data.idx import find_file
from kiln.data.locate import candidate_dirs as candidate_dirs  # where a dataset's files are looked for
from kiln.data.locate import locate as locate
from kiln.data.spec import DatasetSpec, DetectionFolder, HfDataset, ImageFiles, ImageTensors, SegmentationFolder, WebDatasetShards

if TYPE_CHECKING:
    import torch

    from kiln.config import DataConfig
    from kiln.data.info import Data, DataRequest

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS = [str(i) for i in range(10)]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
EMNIST_BALANCED = DIGITS + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + list("abdefghnqrt")


@dataclass(frozen=True)
class IdxDataset(ImageTensors):
    """A dataset stored as IDX files (the MNIST family)."""

    name: str
    class_names: list[str]
    mean: float  # of the training pixels in [0, 1]
    std: float
    torchvision_class: str  # torchvision.datasets.<class> downloads it
    prefix: str = ""  # file name prefix, e.g. "emnist-balanced-"
    system_dirs: tuple[str, ...] = ()
    transpose: bool = False  # EMNIST stores images transposed
    label_offset: int = 0  # EMNIST letters are labelled 1..26
    download_kwargs: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def find(self, folder: Path) -> Path | None:
        """The folder (under `folder`) holding all four files, in any of the layouts people have."""
        for base in (folder, folder / self.torchvision_class, folder / self.torchvision_class / "raw"):
            if all(find_file(base, stem) for split in ("train", "test") for stem in self.files(split)):
                return base
        return None

    def download(self, folder: Path) -> None:
        import torchvision.datasets as tvd

        getattr(tvd, self.torchvision_class)(root=str(folder), train=True, download=True, **self.download_kwargs)

    def describe_files(self) -> str:
        return " / ".join(self.files("train")) + " (.gz or plain)"

    def load(self, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        from kiln.data.idx import load_split

        return load_split(self, folder, split)

    def files(self, split: str) -> tuple[str, str]:
        stem = "train" if split == "train" else "t10k"
        if self.prefix:  # EMNIST names its splits "train"/"test"
            stem = "train" if split == "train" else "test"
        return f"{self.prefix}{stem}-images-idx3-ubyte", f"{self.prefix}{stem}-labels-idx1-ubyte"


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to those data.name may name (kiln.data.spec says what it provides)."""
    DATASETS[spec.name] = spec
    return spec


AG_NEWS_URL = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/{}.csv"

register(IdxDataset("fashion_mnist", FASHION_CLASSES, 0.2860, 0.3530, "FashionMNIST",
                    system_dirs=("/usr/share/datasets/fashion-mnist",)))
register(IdxDataset("mnist", DIGITS, 0.1307, 0.3081, "MNIST"))
register(IdxDataset("kmnist", KMNIST_CLASSES, 0.1918, 0.3483, "KMNIST"))
register(IdxDataset("emnist_digits", DIGITS, 0.1733, 0.3317, "EMNIST", prefix="emnist-digits-",
                    transpose=True, download_kwargs={"split": "digits"}))
register(IdxDataset("emnist_balanced", EMNIST_BALANCED, 0.1751, 0.3332, "EMNIST", prefix="emnist-balanced-",
                    transpose=True, download_kwargs={"split": "balanced"}))
register(IdxDataset("emnist_letters", [chr(c) for c in range(ord("a"), ord("z") + 1)], 0.1722, 0.3309, "EMNIST",
                    prefix="emnist-letters-", transpose=True, label_offset=1, download_kwargs={"split": "letters"}))


@dataclass(frozen=True)
class CsvDataset:
    """A text dataset of train.csv / test.csv files."""

    name: str
    header: bool  # False: the AG News layout (label, title, description), 1-based labels
    class_names: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    own_files: bool = False  # the user's CSVs (targets may be label sets or values), or a dataset's class labels
    root_holds: str = "train.csv and test.csv of texts and labels"
    kind: ClassVar[str] = "text"

    def build(self, cfg: DataConfig, request: DataRequest) -> Data:
        from kiln.data.text import build_text_data

        return build_text_data(self, cfg, request)

    def text_rows(self, cfg: DataConfig) -> dict:
        """pool -> its rows (kiln.data.text_rows): train.csv and test.csv of the dataset's folder."""
        from kiln.data.text_rows import CsvText

        if cfg.files:  # the CSV files per split, local or at URLs
            if "train" not in cfg.files:
                raise KilnError(f"data.files names no train file ({', '.join(cfg.files)}); give {{train: FILE, ...}}")
            return {split: CsvText(name, self) for split, name in cfg.files.items()}
        folder = locate(self, cfg.root, cfg.download)
        return {"train": CsvText(folder / "train.csv", self), "test": CsvText(folder / "test.csv", self)}

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    def find(self, folder: Path) -> Path | None:
        return folder if (folder / "train.csv").is_file() and (folder / "test.csv").is_file() else None

    def describe_files(self) -> str:
        return "train.csv and test.csv"

    def download(self, folder: Path) -> None:
        if not self.urls:
            raise KilnError(f"'{self.name}' has no download source; put train.csv and test.csv in data.root")
        folder.mkdir(parents=True, exist_ok=True)
        for split, url in zip(("train", "test"), self.urls):
            tmp = folder / f".{split}.csv.part"
            urllib.request.urlretrieve(url, tmp)
            tmp.replace(folder / f"{split}.csv")


register(CsvDataset("ag_news", header=False, class_names=("World", "Sports", "Business", "Sci/Tech"),
                    urls=(AG_NEWS_URL.format("train"), AG_NEWS_URL.format("test"))))
register(CsvDataset("text_csv", header=True, own_files=True))


@dataclass(frozen=True)
class ImageFilesDataset(ImageFiles):
    """The user's own image files: a folder of class folders (`image_folder`) or CSVs of paths (`image_csv`)."""

    name: str
    layout: str  # "folder" | "csv"
    root_holds: str
    num_classes = None  # read from the files

    def recognises(self, folder: Path) -> bool:
        """image_csv: a train.csv; a folder of class folders is what is left (kiln.data.registry.source_in)."""
        return self.layout == "csv" and (folder / "train.csv").is_file()

    def describe_files(self) -> str:
        if self.layout == "folder":
            return "<class>/<image> or train/<class>/<image> folders"
        return "train.csv and test.csv (optional val.csv) of image paths and labels"


register(CIFAR10)
register(CIFAR100)
register(ImageFilesDataset("image_folder", "folder", "a folder of class folders (or train/, val/, test/ folders)"))
register(SegmentationFolder())
register(DetectionFolder("coco_detection", "coco"))
register(DetectionFolder("yolo_detection", "yolo"))
register(HfDataset())
register(WebDatasetShards())
register(ImageFilesDataset("image_csv", "csv", "train.csv and test.csv (optional val.csv) with image paths and labels"))


OWN_DATASET_KIND = "custom"  # DataInfo.kind of the user's own Dataset class


def known_num_classes(name: str) -> int | None:
    """The class count of a registered dataset, known before reading it (None: read from the data)."""
    return None if names_code(name) else get_dataset(name).num_classes


def kind_of(name: str) -> str:
    """The kind of inputs data.name gives (DataInfo.kind), known before reading it."""
    return OWN_DATASET_KIND if names_code(name) else get_dataset(name).kind


def own_files(name: str) -> str | None:
    """What data.root must hold when data.name reads the user's own files (None: a dataset found in kiln's search
    order, or the user's own Dataset class)."""
    if names_code(name) or name not in DATASETS:
        return None
    spec = DATASETS[name]
    return spec.root_holds if spec.own_files else None


def found_by_root(name: str) -> bool:
    """Whether data.root chooses the data itself (the user's own files or Dataset), not only where it is kept."""
    return names_code(name) or own_files(name) is not None or getattr(DATASETS.get(name), "root_chooses", False)


def resizes_images(name: str) -> bool:
    """Whether kiln decodes and resizes the source's images (the user's image files) rather than keeping a
    dataset's own size: what a pretrained model's preprocessing may set."""
    return not names_code(name) and name in DATASETS and getattr(DATASETS[name], "resizes_images", False)


def get_dataset(name: str):
    if name not in DATASETS:
        raise KilnError(f"unknown dataset '{name}' — registered datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def source_in(folder: Path) -> str:
    """The data.name that reads the user's files in `folder`: the first source that recognises its layout (a saved
    Hugging Face dataset or Parquet files, train.csv of image paths), else class folders (image_folder)."""
    for name, spec in DATASETS.items():
        recognises = getattr(spec, "recognises", None)
        if recognises is not None and recognises(Path(folder)):
            return name
    return "image_folder"


def image_ids(cfg: DataConfig) -> dict[str, int]:
    """The dataset's own id of each image it lists, by resolved path (COCO files); {} for sources without ids."""
    spec = None if names_code(cfg.name) else DATASETS.get(cfg.name)
    ids = getattr(spec, "image_ids", None)
    return ids(cfg) if ids is not None else {}


def training_files(cfg: DataConfig, task: str) -> list[Path]:
    """The image files a config trains and validates on, for commands that compare them with other files (kiln
    shift); a source without such files is a clear error."""
    spec = get_dataset(cfg.name) if not names_code(cfg.name) else None
    paths = getattr(spec, "training_paths", None)
    if paths is None:
        raise KilnError(f"data.name={cfg.name} is not a folder or CSV of your image files; kiln shift compares image "
                        "files (data.name: image_folder or image_csv)")
    return paths(cfg, task)
