"""What a split of data is to the rest of kiln: `DataInfo` (what a model, the metrics and `kiln predict` need to
know) and `Data` (the batch sources of the requested splits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from kiln.core.errors import KilnError
from kiln.data.loaders import Batches


@dataclass(frozen=True)
class DataInfo:
    """What a model, the metrics and `kiln predict` need to know about the data."""

    name: str
    kind: str  # what the inputs are: kiln.data.inputs.inputs_of(info) answers for them (image, text, your Dataset's)
    num_classes: int  # the model's outputs: classes, labels (multilabel) or target values (regression)
    class_names: list[str]  # their names
    in_channels: int = 0  # images
    image_size: tuple[int, int] = (0, 0)
    mean: tuple[float, ...] = (0.0,)  # per channel, of pixels in [0, 1]
    std: tuple[float, ...] = (1.0,)
    stored_size: tuple[int, int] = (0, 0)  # image files: decoded at this size, then centre-cropped to image_size
    crop: bool = True  # image files cut to the model's aspect ratio; False: stretched (masks and boxes map back)
    output_ids: tuple[int, ...] = ()  # the dataset's own id of each output (COCO category ids); empty: its index
    vocab_size: int = 0  # text
    pad_id: int = 0


@dataclass(frozen=True)
class DataRequest:
    """What a caller asks of a data source besides its config section: which splits, batched for which device and
    process, read for which task."""

    device: torch.device
    seed: int  # of the splits, the sampling order and the augmentation
    splits: tuple[str, ...] = ("train", "val", "test")
    task: str = "multiclass"  # task.name: targets are class labels, label sets (multilabel) or numbers (regression)
    channels_last: bool = False
    overfit_batches: int = 0
    rank: int = 0
    world_size: int = 1
    vocab: Any = None  # text: reuse a run's saved vocabulary instead of building one from the training split


@dataclass
class Data:
    info: DataInfo
    train: Batches | None = None
    val: Batches | None = None
    test: Batches | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    loader: str = "dataloader"
    vocab: Any = None  # text: the training vocabulary, saved in the run folder
    # data.* settings the config left unset and the source derived from the data (image files: image_size,
    # channels, class_names, mean, std); the run's plan records them, so test and predict read them back
    derived: dict[str, Any] = field(default_factory=dict)

    def require(self, split: str) -> Batches:
        """The batches of `split` (train | val | test), which the caller asked build_data for."""
        batches = getattr(self, split)
        if batches is None:
            raise KilnError(f"the data has no {split} split here")
        return batches
