"""The JSON documents kiln writes, typed: `TestResults` (a run's test_metrics.json, and test_metrics-<data>.json for
other data) and `ExportMeta` (what an exported model carries: in an ONNX file's metadata, a .pt2's or TorchScript
file's extra files, a safetensors header, and the JSON beside every export). They stay plain JSON objects on disk
(TypedDicts: a reader needs nothing of kiln's); the keys a task adds are its own, listed under each task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

from typing_extensions import Required


class TestResults(TypedDict, total=False):
    """test_metrics.json: which checkpoint was scored, on what, and the task's results."""

    checkpoint: Required[str]  # the checkpoint file scored
    epoch: Required[int]  # the epochs it had trained
    task: Required[str]  # multiclass | multilabel | regression
    data: dict[str, Any]  # the data scored, when it is not the run's own test split (name, root, test_split)
    tta: str  # the test-time views averaged (kiln test --tta)
    ensemble: list[dict[str, Any]]  # an ensemble's members: run, checkpoint, epoch, weight
    file: str  # where these results were written (returned, not saved)
    loss: Required[float]  # the task's loss
    num_samples: Required[int]
    # multiclass
    acc: float
    acc_top5: float | None  # None with fewer than 6 classes
    f1: float  # macro F1
    per_class_acc: dict[str, float]  # the classes the scored data has
    class_names: list[str]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted
    # multilabel
    f1_micro: float
    f1_macro: float
    map: float  # mean average precision over the labels
    per_label: dict[str, dict[str, float]]  # precision, recall, f1, ap, support of each label
    thresholds: list[float]  # each label's decision threshold
    # regression (values in the targets' own units)
    mae: float
    rmse: float
    r2: float
    r2_per_target: dict[str, float]
    target_names: list[str]
    target_mean: list[float]
    target_std: list[float]


def by_name(document: TestResults | ExportMeta) -> Mapping[str, Any]:
    """A document's entries by a name known only at run time (a task's summary metrics, cv's folds, a task's
    exported settings)."""
    return cast(Mapping[str, Any], document)


class ExportInput(TypedDict, total=False):
    """What an exported model takes: images (shape, normalisation) or texts (layout, tokenization)."""

    shape: list[Any]  # images: ["batch", channels, height, width] (a graph of one image at a time: 1, ...)
    dtype: str
    pixels: str  # how pixels become the input
    mean: list[float] | tuple[float, ...]
    std: list[float] | tuple[float, ...]
    stored_size: list[int] | tuple[int, int]  # images are resized to this, then centre-cropped to the shape
    crop: bool  # False: images are stretched to the shape, not cut to its aspect ratio (segmentation, detection)
    layout: str  # texts: pad | offsets | masked
    tensors: dict[str, str]  # each input tensor and what it holds
    tokenization: dict[str, Any]  # tokenizer, ngrams, max_len and the rule
    pad_id: int
    vocab: list[str] | None  # kiln's own vocabulary (index = id)
    tokenizer_dir: str  # a model's own tokenizer, in this folder beside the export


class ExportMeta(TypedDict, total=False):
    """An export's metadata."""

    format: Required[str]  # onnx | exported | torchscript | safetensors
    task: Required[str]
    class_names: Required[list[str]]  # the classes, labels or target columns, in output order
    output: str  # what the output tensor holds
    outputs: list[str]  # the graph's outputs, in order (logits; a detector's boxes, scores, labels)
    batch_size: int  # set where the graph takes this many inputs at a time (a detector's: 1)
    checkpoint: str  # the run's checkpoint exported
    input: Required[ExportInput]
    threshold: float | list[float]  # multilabel: each label's decision threshold
    target_mean: list[float] | None  # regression: outputs are standardised with these
    target_std: list[float] | None
    score_threshold: float  # detection: detections below it are dropped
    max_detections: int  # detection: at most this many per image
    category_ids: list[int] | None  # detection: the dataset's id of each class
    model: dict[str, Any]  # safetensors: the model's name and args, to rebuild it
    data_info: dict[str, Any] | None  # safetensors: what the model was trained on
    parity_max_abs_diff: float  # the JSON beside the export: the largest output difference from the PyTorch model
    parity: dict[str, float]  # ... and each output's, where there are several
