"""What a registered dataset is (`DatasetSpec`), and the builders of the kinds kiln has: a spec registers itself by
object (kiln.data.registry.register) and builds its own data, so a new kind of source is a spec class with a
`build` method, and a new dataset of a known kind one `register(...)` call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from kiln.config import DataConfig
    from kiln.data.image_files import Found as ScannedImages
    from kiln.data.info import Data, DataRequest


class DatasetSpec(Protocol):
    """A registered dataset. Every builder finds its samples (pools), plans the splits and hands a Source to
    kiln.data.assemble.assemble, which makes the Data."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...  # DataInfo.kind: what its inputs are after training (kiln.data.inputs)

    @property
    def own_files(self) -> bool: ...  # the user's own files, found under data.root and nowhere else

    @property
    def root_holds(self) -> str: ...  # own files: what data.root must hold

    @property
    def num_classes(self) -> int | None: ...  # known before reading the data (None: read from it)

    def describe_files(self) -> str: ...

    def build(self, cfg: DataConfig, request: DataRequest) -> Data: ...


class Findable(Protocol):
    """A dataset kiln looks for in its search order (kiln.data.registry.locate), and may download."""

    def find(self, folder: Path) -> Path | None: ...

    def download(self, folder: Path) -> None: ...


class ImageTensors:
    """A dataset read whole into uint8 image tensors and class labels (the MNIST family, CIFAR)."""

    kind: ClassVar[str] = "image"
    own_files: ClassVar[bool] = False
    root_holds: ClassVar[str] = ""

    def build(self, cfg: DataConfig, request: DataRequest) -> Data:
        from kiln.data.images import build_image_data

        return build_image_data(self, cfg, request)


class ImageFiles:
    """The user's own image files, decoded and resized to data.image_size."""

    kind: ClassVar[str] = "image"
    own_files: ClassVar[bool] = True
    resizes_images: ClassVar[bool] = True  # a pretrained model's preprocessing may set the size and normalisation

    def build(self, cfg: DataConfig, request: DataRequest) -> Data:
        from kiln.data.images import build_file_image_data

        return build_file_image_data(self, cfg, request)

    def location(self, cfg: DataConfig) -> str:
        """Where the images are, for the log."""
        return str(cfg.root)

    def scan(self, cfg: DataConfig, task: str) -> ScannedImages:
        """The images and their targets, by pool (kiln.data.image_files.Found)."""
        from kiln.data.images import scan_image_files

        return scan_image_files(self, cfg, task)

    def training_paths(self, cfg: DataConfig, task: str) -> list[Path]:
        """Every image a run of `cfg` may train or validate on (not a given test folder or file)."""
        from kiln.data.images import training_image_paths

        return training_image_paths(self, cfg, task)


class HfDataset(ImageFiles):
    """A Hugging Face dataset or Parquet files of images (kiln.data.hf_tables reads them): the images go through
    the same decoding, cache and batches as image files."""

    name = "hf_dataset"
    own_files: ClassVar[bool] = False  # data.root may also name a dataset in the Hugging Face cache
    root_chooses: ClassVar[bool] = True  # ... but whichever it names, it is the data (another root: other data)
    root_holds: ClassVar[str] = ("a save_to_disk folder, Parquet files (train-*.parquet, test-*.parquet), or a dataset "
                                 "name in the Hugging Face cache; or data.files: {train: GLOB, test: GLOB}")
    num_classes = None  # a ClassLabel feature's names, or the label column's values

    def describe_files(self) -> str:
        return self.root_holds

    @staticmethod
    def recognises(folder: Path) -> bool:
        """A save_to_disk folder, or Parquet files (beside each other or in data/, the Hub's layout)."""
        return any(folder.glob("*.parquet")) or any(folder.glob("data/*.parquet")) or \
            (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()

    def build(self, cfg: DataConfig, request: DataRequest) -> Data:
        """Images (data.image_column is a column) through the image pipeline, else texts (data.text.text_columns)
        through the text pipeline."""
        from kiln.data.hf_tables import holds_images

        if holds_images(cfg):
            return super().build(cfg, request)
        from kiln.data.text import build_text_data

        return build_text_data(self, cfg, request)

    def scan(self, cfg: DataConfig, task: str) -> ScannedImages:
        from kiln.data.hf_tables import scan_hf

        return scan_hf(cfg, task)

    def text_rows(self, cfg: DataConfig) -> dict:
        from kiln.data.hf_tables import text_rows

        return text_rows(cfg)

    class_names: ClassVar[tuple[str, ...]] = ()  # read from the data (text: a ClassLabel, else the label cells)

    def location(self, cfg: DataConfig) -> str:
        return ", ".join(cfg.files.values()) if cfg.files else str(cfg.root)


class WebDatasetShards(ImageFiles):
    """Tar shards in the WebDataset layout, local or in an object store (kiln.data.shards indexes them); read by
    byte range, in a seeded shard order per rank."""

    name = "webdataset"
    own_files: ClassVar[bool] = False  # found by data.urls, not data.root
    root_holds: ClassVar[str] = ('tar shards named by data.urls ("shards/train-{000000..000009}.tar"): per key an image '
                                 "(.jpg/.png/.webp) and its target (.cls, .txt or .json)")
    num_classes = None  # classes.txt beside the shards, data.class_names, or the targets

    def describe_files(self) -> str:
        return self.root_holds

    def scan(self, cfg: DataConfig, task: str) -> ScannedImages:
        from kiln.data.shards import scan_shards

        return scan_shards(cfg, task)

    def location(self, cfg: DataConfig) -> str:
        return str(cfg.urls if isinstance(cfg.urls, str) else ", ".join((cfg.urls or {}).values()))


class SegmentationFolder:
    """A folder of images with a mask each, per split (kiln.data.segmentation reads it)."""

    name = "segmentation_folder"
    kind: ClassVar[str] = "image"
    own_files: ClassVar[bool] = True
    root_holds: ClassVar[str] = ("train/images/ and train/masks/ (one PNG of class indices per image, the same file "
                                 "stem; val/ and test/ alike, optional; classes.txt naming the classes, optional)")
    num_classes = None  # from classes.txt or the masks

    def describe_files(self) -> str:
        return self.root_holds

    def build(self, cfg: DataConfig, request: DataRequest) -> Data:
        from kiln.data.segmentation import build_segmentation_data

        return build_segmentation_data(cfg, request, self.root_holds)


class DetectionFolder:
    """Images with boxes: COCO annotation files or YOLO label files (kiln.data.detection reads them)."""

    kind: ClassVar[str] = "image"
    own_files: ClassVar[bool] = True
    num_classes = None  # from the categories or classes.txt
    HOLDS: ClassVar[dict[str, str]] = {
        "coco": "annotations/train.json (COCO; val.json and test.json optional) with file_name relative to images/",
        "yolo": "train/images/ with train/labels/<stem>.txt (`class cx cy w h`, normalised; val/ and test/ alike, "
                "optional) and classes.txt"}

    def __init__(self, name: str, layout: str):
        self.name, self.layout = name, layout

    @property
    def root_holds(self) -> str:
        return self.HOLDS[self.layout]

    def describe_files(self) -> str:
        return self.root_holds

    def build(self, cfg: DataConfig, request: DataRequest) -> Data:
        from kiln.data.detection import build_detection_data

        return build_detection_data(cfg, request, self.layout, self.root_holds)

    def image_ids(self, cfg: DataConfig) -> dict[str, int]:
        """COCO: each listed image's id, by its resolved path (predictions name their image by it); YOLO: none."""
        from kiln.data.detection import coco_image_ids

        return coco_image_ids(cfg.root) if self.layout == "coco" and cfg.root is not None else {}
