"""The data sections of the config: data, its augmentation, transforms, text and cross-validation settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

from kiln.config.sections import Section


class AugmentConfig(Section):
    crop_padding: int = Field(0, ge=0)
    """Random crop after zero-padding each side by this many pixels (0 = off). Training split only."""
    hflip: bool = False
    """Random horizontal flip with probability 0.5 (training split only). Off unless asked for, whatever the source
    (digits and letters must not be mirrored; photos and clothes usually can be: the folder recipes turn it on)."""
    resized_crop: bool = False
    """RandomResizedCrop to data.image_size: a random area (`scale`) and aspect ratio (`ratio`) of each image,
    drawn independently per image (training split only). Off unless asked for, whatever the source; the
    image-folder and image-CSV recipes turn it on."""
    scale: tuple[float, float] = (0.08, 1.0)
    """resized_crop: the range of the crop's area as a fraction of the (stored) image."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """resized_crop: the range of the crop's aspect ratio (width / height)."""

    mixup: float = Field(0.0, ge=0)
    """MixUp: each training batch mixed with itself in another order, images and targets alike, with a share
    drawn from Beta(mixup, mixup) (0 = off; 0.2-0.4 is usual). The loss takes the mixed (soft) targets;
    multiclass and multilabel. On the training device, seeded per (seed, epoch, batch): resume stays exact."""
    cutmix: float = Field(0.0, ge=0)
    """CutMix: a box of each training image replaced by the same box of another image of the batch, the targets
    mixed by the box's area; its size drawn from Beta(cutmix, cutmix) (0 = off; 1.0 is usual). Images only."""
    mix_prob: float = Field(1.0, ge=0, le=1)
    """The share of training batches that are mixed (MixUp or CutMix); the rest train on plain images."""
    mix_switch_prob: float = Field(0.5, ge=0, le=1)
    """With both mixup and cutmix set: the share of mixed batches that get CutMix (the others MixUp)."""
    mix_off_epoch: int | None = Field(None, gt=0)
    """From this epoch on (1-based) batches are no longer mixed: the last epochs see plain images (as timm's
    --mixup-off-epoch). Unset: mixed to the end."""
    preset: Literal["randaugment", "trivialaugment", "augmix"] | None = None
    """A policy of torchvision's, drawn per training image after the crops and flips: randaugment (`num_ops`
    operations at `magnitude`), trivialaugment (one operation at a random strength), augmix (`severity`). Images
    only."""
    num_ops: int = Field(2, ge=1)
    """preset=randaugment: operations per image."""
    magnitude: int = Field(9, ge=0, le=30)
    """preset=randaugment: the strength of each operation (0..30 bins; 9 is timm's rand-m9)."""
    severity: int = Field(3, ge=1, le=10)
    """preset=augmix: the strength of its operations."""
    random_erasing: float = Field(0.0, ge=0, le=1)
    """The probability that a random box of each training image is replaced by noise (timm's --reprob; 0.25 is
    usual). Images only."""

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("must be [low, high] with 0 < low <= high")
        return v


class TransformsConfig(Section):
    """Per-image transforms for image folders/CSVs, replacing kiln's own augmentation (train) or centre crop (eval)."""

    train: list[dict[str, Any]] | None = None
    """Training split: a list of {name: <torchvision.transforms.v2 class or package.module:Class>, <its arguments>},
    e.g. [{name: RandomResizedCrop, size: 64, scale: [0.5, 1.0]}, {name: ColorJitter, brightness: 0.3}]. Applied to
    each uint8 image (decoded at image_size / crop_fraction), each with its own random draw; must end at
    data.image_size. kiln normalises afterwards."""
    eval: list[dict[str, Any]] | None = None
    """Validation, test and predict: the same form, e.g. [{name: CenterCrop, size: 64}]."""


class CvConfig(Section):
    """This run is one fold of a k-fold cross-validation (`kiln cv` sets it)."""

    folds: int = Field(gt=1)
    """How many folds the training split is cut into (stratified by class where labels are known)."""
    fold: int = Field(gt=0)
    """Which fold (1..folds) is held out: it is this run's test split; validation comes from the other folds."""

    @model_validator(mode="after")
    def _fold_in_range(self) -> "CvConfig":
        if self.fold > self.folds:
            raise ValueError(f"fold {self.fold} of {self.folds}: choose 1..{self.folds}")
        return self


class TextConfig(Section):
    """How text datasets (ag_news, text_csv) are read, tokenized and batched."""

    text_columns: list[str] = Field(default_factory=lambda: ["text"])
    """text_csv: header names of the columns joined (with a space) into the text."""
    label_column: str | list[str] | None = "label"
    """text_csv: header name of the label column: names or 0-based integers (multiclass), label sets such as
    `sports|politics` (multilabel), numbers (regression; a list of columns for several targets)."""
    label_names: list[str] | None = None
    """text_csv: the class names in label order; unset: taken from the training file's labels."""
    tokenizer: Literal["auto", "model", "basic_english", "whitespace"] = "auto"
    """model: an hf:NAME model's own tokenizer (its ids and special tokens; no kiln vocabulary); basic_english:
    lowercase, words and punctuation split apart; whitespace: split on spaces only. auto = model for hf: models,
    basic_english otherwise (resolved when the config is read, and recorded in the run's config.yaml)."""
    ngrams: int = Field(1, ge=1, le=3)
    """Add n-grams up to this length as extra tokens (2 = bigrams, as in fastText)."""
    min_freq: int = Field(1, ge=1)
    """Tokens seen fewer times than this in the training split map to <unk>."""
    max_vocab: int | None = Field(None, gt=2)
    """Keep at most this many tokens (the most frequent; <pad> and <unk> included)."""
    max_len: int | None = Field(None, gt=0)
    """Truncate every text to this many tokens (n-grams included; a model's tokenizer: its special tokens included,
    and unset means the model's own limit, e.g. 512)."""
    collate: Literal["pad", "offsets"] = "pad"
    """pad: (B, T) ids padded to the batch's longest text, with lengths and a mask; offsets: one flat id list
    plus start offsets, for EmbeddingBag models (no padding at all)."""
    bucket: bool = False
    """Batch texts of similar length together (less padding); the order stays seeded and resumable."""
    on_bad_row: Literal["error", "skip"] = "error"
    """Deprecated: use data.on_bad_row (a different value here is moved there, with a warning; kiln keeps the two
    equal)."""


class DataConfig(Section):
    name: str = "fashion_mnist"
    """Registered dataset name (see `kiln doctor` / the README for the list), or your own Dataset class as
    `package.module:Class` (built with data.args, and split="train"/"val"/"test" if it takes `split`)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Your own Dataset: keyword arguments for its constructor."""
    test_args: dict[str, Any] | None = None
    """Your own Dataset without a `split` argument: constructor arguments of the test split (unset: no test)."""
    collate: str | None = None
    """Your own Dataset: a collate function of yours, `package.module:function` (e.g. one that pads)."""
    num_classes: int | None = Field(None, gt=0)
    """Your own Dataset: the number of classes, when it has no `classes`/`class_to_idx`/`num_classes` attribute."""
    root: Path | None = None
    """Folder holding the dataset files. Unset: $KILN_DATA/<name>, ./data/<name>, then system locations."""
    download: bool = False
    """Download the dataset into ./data/<name> if it is not found. Off by default: no hidden network access."""
    files: dict[Literal["train", "val", "test"], str] | None = None
    """The files of each split, local or URLs (s3://, gs://, https://) — instead of those data.root holds.
    hf_dataset: Parquet files, as globs ({train: "data/train-*.parquet", test: "s3://bucket/test-*.parquet"});
    image_csv and text_csv: the CSV files ({train: "s3://bucket/pets/train.csv", test: ...}; an image CSV's paths
    are relative to it)."""
    urls: str | dict[Literal["train", "val", "test"], str] | None = None
    """webdataset: the tar shards, a brace pattern such as "shards/train-{000000..000127}.tar" (local paths,
    s3://, gs://, https:// through fsspec); one pattern (kiln splits it) or one per split ({train: ..., test: ...})."""
    image_column: str = "image"
    """hf_dataset: the column of images (an Image feature, image bytes, or paths relative to data.root)."""
    shuffle_buffer: int = Field(1000, gt=0)
    """webdataset: training reads its shards in a seeded order per epoch, each rank its own shards, and shuffles
    samples within a seeded buffer of this many (larger: better mixed; the order stays resumable)."""
    batch_size: int = Field(128, gt=0)
    """Training batch size per process."""
    eval_batch_size: int | None = Field(None, gt=0)
    """Batch size for validation and test; unset means 4 x batch_size (no gradients, so more fits)."""
    val_split: float | int = Field(0.1, ge=0)
    """Validation split taken from the training files: a fraction in [0, 1) or a count of samples."""
    val_files: Path | None = None
    """Image folders/CSVs: a text file naming the training images that form the validation split, one path per
    line (relative to data.root, or absolute) — e.g. the images most like the test set, from `kiln shift
    --val-like`. Replaces data.val_split."""
    split_seed: int = 0
    """Seed of the train/validation split; independent of `seed` so the split never changes between runs."""
    train_subset: int | None = Field(None, gt=0)
    """Use only this many training samples (a fixed seeded subset), e.g. for quick experiments."""
    classes: list[int] | None = None
    """Keep only these classes (original label numbers), relabelled 0..k-1 in this order (image datasets)."""
    sampler: Literal["shuffle", "weighted"] = "shuffle"
    """Training order: shuffle (a seeded permutation each epoch), or weighted — each epoch a seeded draw with
    replacement, each sample with probability 1 / its class's count (balanced classes; resumable; under DDP one
    global draw shared out between the ranks). Built-in datasets, image folders/CSVs and text."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes. 0 loads in the main process, which is fastest for in-memory tensors."""
    loader: Literal["auto", "resident", "dataloader"] = "auto"
    """resident: keep the uint8 dataset on the training device and batch/augment there (fastest);
    dataloader: a torch DataLoader; auto: resident when the data fits within `resident_max_mb`."""
    resident_max_mb: float | None = Field(None, gt=0)
    """Largest dataset (MiB, uint8) that `loader: auto` keeps on the device. Unset: a quarter of the GPU's free
    memory on CUDA, no limit on CPU (the data is in host memory either way)."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """Train-time augmentation of images, applied on the device to whole batches (each image its own draw)."""
    cv: CvConfig | None = None
    """Cross-validation fold of this run ({folds: 5, fold: 2}; `kiln cv` sets it): the training split is cut into
    folds, the held-out fold is the test split, and validation is taken from the rest."""
    transforms: TransformsConfig = Field(default_factory=TransformsConfig)
    """Image folders/CSVs: per-image torchvision transforms from the config, checked before training starts."""
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None
    """Image folders/CSVs: the size S (or [H, W]) the model sees. Evaluation resizes the shorter side to
    S / crop_fraction and centre-crops S; training takes a RandomResizedCrop of that. Unset: the median short side
    of the training images, rounded to a multiple of 8, at most 224 (recorded in the run's config.yaml)."""
    crop_fraction: float = Field(0.875, gt=0, le=1)
    """Image folders/CSVs: the centre crop's share of the resized image at evaluation (0.875 = torchvision's 224/256)."""
    channels: Literal[1, 3] | None = None
    """Image folders/CSVs: 3 = RGB (transparency composited on white; palette, CMYK, 16-bit, grayscale converted),
    1 = grayscale. Unset: 1 if every training image is grayscale, else 3 (recorded in the run's config.yaml)."""
    mean: list[float] | None = None
    """Per-channel normalisation mean of pixels in [0, 1]. Unset: the pretrained weights' own values with
    model.pretrained=torchvision or timm (as are image_size and crop_fraction, from the weights' metadata), else
    computed once on the training split (recorded in the run's config.yaml)."""
    std: list[float] | None = None
    """Per-channel normalisation standard deviation (see `mean`)."""
    class_names: list[str] | None = None
    """Image folders/CSVs: the class names in label order. Unset: the sorted class folder names (or CSV labels);
    recorded in the run's config.yaml, so `kiln test` on another folder labels it the same way."""
    class_map: Path | None = None
    """Image folders/CSVs: a text file with one class name per line, in label order (instead of class_names)."""
    test_split: float | int | Literal["all"] = 0
    """Image folders in the <class>/ layout: a stratified test split held out before the validation split
    (fraction or count; 0 = no test split); `all`: every image is a test image (what `kiln test RUN
    data.root=other/folder` uses)."""
    path_column: str = "path"
    """image_csv: header name of the column of image paths (relative to the CSV file)."""
    label_column: str | list[str] = "label"
    """image_csv: header name of the label column: class names or 0-based integers (multiclass), label sets such as
    `cat|dog` (multilabel), numbers (regression; a list of columns for several targets)."""
    label_separator: str = Field("|", min_length=1)
    """multilabel (image_csv, text_csv): what separates a sample's labels in its label cell (`cat|dog`); an empty
    cell is a sample with none of the labels."""
    on_bad_row: Literal["error", "skip"] = "error"
    """A bad sample (a malformed CSV row, a missing or undecodable image): stop with its file (and line), or skip
    and count it."""
    cache: Literal["auto", "on", "off"] = "auto"
    """Image folders/CSVs: decode every image once into a uint8 store in $KILN_CACHE (default ~/.cache/kiln),
    reused while the files are unchanged. off: decode per sample in DataLoader workers every epoch; auto: on
    while the store stays within `cache_max_mb`."""
    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v  # YAML reads on/off as booleans

    cache_max_mb: float = Field(32768, gt=0)
    """cache: auto decodes once only when the store (N x C x H x W bytes) is at most this many MiB."""
    text: TextConfig = Field(default_factory=TextConfig)
    """Text datasets: columns, tokenizer, vocabulary and batching."""

    @field_validator("image_size", mode="before")
    @classmethod
    def _size_forms(cls, v: Any) -> Any:
        """64, [64, 48], or the 64x48 people write on the command line; anything else is one clear error."""
        if v is None:
            return v
        given = v
        if isinstance(v, str) and (parts := re.fullmatch(r"\s*(\d+)\s*(?:[x×,]\s*(\d+)\s*)?", v)):
            v = int(parts[1]) if parts[2] is None else (int(parts[1]), int(parts[2]))
        sizes = v if isinstance(v, (list, tuple)) and len(v) == 2 else [v]
        if all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            return v
        raise ValueError(f"give one size in pixels (64: square) or two, height and width: [64, 48] (64x48 on the "
                         f"command line); {given!r} is neither")

    @field_validator("val_split", "test_split")
    @classmethod
    def _fraction_or_count(cls, v: float | int | str) -> float | int | str:
        if isinstance(v, (int, float)) and v < 0:
            raise ValueError("must be at least 0")
        if isinstance(v, float) and not v < 1:
            raise ValueError("a fraction must be below 1 (use an integer for a count of samples)")
        return v

