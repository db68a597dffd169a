"""The typed config: one model per section, loading, `base:` merging, overrides.

Every field has a docstring; they become the descriptions in `kiln schema`.
A config is plain data: it creates no folders and is never pickled into a
checkpoint (checkpoints hold `Config.model_dump()`).
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from kiln.errors import KilnError

log = logging.getLogger("kiln")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class AugmentConfig(Section):
    crop_padding: int = Field(0, ge=0)
    """Random crop after zero-padding each side by this many pixels (0 = off). Training split only."""
    hflip: bool | None = None
    """Random horizontal flip with probability 0.5 (training split only). Unset: on for image folders and image
    CSVs, off for the built-in datasets (digits and letters must not be mirrored)."""
    resized_crop: bool | None = None
    """RandomResizedCrop to data.image_size: a random area (`scale`) and aspect ratio (`ratio`) of each image,
    drawn independently per image. Unset: on for image folders and image CSVs, off for the built-in datasets."""
    scale: tuple[float, float] = (0.08, 1.0)
    """resized_crop: the range of the crop's area as a fraction of the (stored) image."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """resized_crop: the range of the crop's aspect ratio (width / height)."""

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
    tokenizer: Literal["basic_english", "whitespace"] = "basic_english"
    """basic_english: lowercase, words and punctuation split apart; whitespace: split on spaces only."""
    ngrams: int = Field(1, ge=1, le=3)
    """Add n-grams up to this length as extra tokens (2 = bigrams, as in fastText)."""
    min_freq: int = Field(1, ge=1)
    """Tokens seen fewer times than this in the training split map to <unk>."""
    max_vocab: int | None = Field(None, gt=2)
    """Keep at most this many tokens (the most frequent; <pad> and <unk> included)."""
    max_len: int | None = Field(None, gt=0)
    """Truncate every text to this many tokens (n-grams included)."""
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
    batch_size: int = Field(128, gt=0)
    """Training batch size per process."""
    eval_batch_size: int | None = Field(None, gt=0)
    """Batch size for validation and test; unset means 4 x batch_size (no gradients, so more fits)."""
    val_split: float | int = Field(0.1, ge=0)
    """Validation split taken from the training files: a fraction in [0, 1) or a count of samples."""
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
    """Per-channel normalisation mean of pixels in [0, 1]. Unset: the pretrained weights' values with
    model.pretrained=torchvision, else computed once on the training split (recorded in the run's config.yaml)."""
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

    @field_validator("val_split", "test_split")
    @classmethod
    def _fraction_or_count(cls, v: float | int | str) -> float | int | str:
        if isinstance(v, (int, float)) and v < 0:
            raise ValueError("must be at least 0")
        if isinstance(v, float) and not v < 1:
            raise ValueError("a fraction must be below 1 (use an integer for a count of samples)")
        return v


class ModelConfig(Section):
    name: str = "cnn"
    """Registered model name (mlp, cnn, resnet18/34/50, embedding_bag, gru, transformer) or `package.module:Class`."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the model's constructor; checked against its signature before training."""
    pretrained: str | None = None
    """Start from weights: `torchvision` (the architecture's torchvision weights, see `weights`), a kiln run
    folder (its best.pt; a folder of runs: the newest), a kiln checkpoint, or a plain state_dict file."""
    weights: str = "DEFAULT"
    """With pretrained: torchvision, the weights enum member, e.g. IMAGENET1K_V1 (DEFAULT = the best available)."""
    freeze: Literal["none", "backbone"] | list[str] = "none"
    """Parameters to freeze: none, backbone (everything but the classifier head), or a list of name prefixes."""
    unfreeze_at_epoch: int | None = Field(None, gt=1)
    """From this epoch on (1-based) train every parameter: staged fine-tuning."""
    head: str | None = None
    """Name prefix of the classifier head; unset: the last Linear layer (e.g. `fc` in a ResNet)."""

    @model_validator(mode="after")
    def _unfreeze_needs_freeze(self) -> "ModelConfig":
        if self.unfreeze_at_epoch is not None and self.freeze == "none":
            raise ValueError("model.unfreeze_at_epoch needs model.freeze (backbone or a list of prefixes)")
        return self


class OptimConfig(Section):
    name: str = "adamw"
    """Optimizer: sgd, adam, adamw (kiln's settings below), or any torch.optim class (`Adam`, `RMSprop`,
    `torch.optim:Adagrad`) or your own `package.module:Class`, built with lr, weight decay and `args`."""
    args: dict[str, Any] = Field(default_factory=dict)
    """A torch.optim (or your own) optimizer: further constructor arguments, e.g. {amsgrad: true}; checked against
    its signature before training."""
    decay_norm_and_bias: bool = False
    """Apply weight decay to biases and normalisation weights too (torch's own default; kiln's is not to)."""

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        return _check_torch_class("optim.name", v, "torch.optim", ("sgd", "adam", "adamw"))
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate, absolute: the same at any batch size. Or set `lr_base` instead (not both)."""
    lr_base: float | None = Field(None, gt=0)
    """Peak learning rate per `lr_base_size` samples of global batch (batch x accumulation x processes), scaled to
    the batch the run uses by `lr_scale` (timm's rule): a recipe that survives a changed batch size."""
    lr_base_size: int = Field(256, gt=0)
    """The global batch size that `lr_base` is the learning rate of."""
    lr_scale: Literal["auto", "linear", "sqrt", "none"] = "auto"
    """How `lr_base` follows the batch: linear (lr_base x batch / lr_base_size), sqrt (x its square root), none;
    auto = linear for SGD, square root for adaptive optimizers (Adam, AdamW, ...)."""
    weight_decay: float = Field(0.0, ge=0)
    """Weight decay (decoupled for adamw). Not applied to biases and normalisation weights."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum."""
    nesterov: bool = False
    """SGD Nesterov momentum."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam/AdamW betas."""
    backbone_lr_mult: float = Field(1.0, ge=0)
    """Learning rate of the backbone (all but the head) as a multiple of `lr`: discriminative fine-tuning."""

    @model_validator(mode="after")
    def _one_lr_form(self) -> "OptimConfig":
        if self.lr_base is not None and "lr" in self.model_fields_set:
            raise ValueError("set optim.lr (an absolute learning rate) or optim.lr_base (scaled with the batch), "
                             "not both")
        return self

    @model_serializer(mode="wrap")
    def _saved_in_one_form(self, handler):
        """A saved config (config.yaml, a checkpoint) keeps the form the user wrote: lr_base drops the default lr."""
        data = handler(self)
        if self.lr_base is not None and isinstance(data, dict):
            data.pop("lr", None)
        return data

    def scaling(self) -> str:
        """linear | sqrt | none: how lr_base follows the batch (auto resolved by the optimizer)."""
        if self.lr_scale != "auto":
            return self.lr_scale
        return "linear" if self.name.lower().rsplit(":", 1)[-1] == "sgd" else "sqrt"

    def resolved_lr(self, global_batch: int | None) -> float:
        """The peak learning rate a run with this global batch uses (derived; the config is not changed)."""
        if self.lr_base is None:
            return self.lr
        ratio = (global_batch or self.lr_base_size) / self.lr_base_size
        return self.lr_base * {"linear": ratio, "sqrt": ratio ** 0.5, "none": 1.0}[self.scaling()]

    def in_own_form(self, lr: float, global_batch: int | None) -> tuple[str, float]:
        """(key, value) that gives `lr` at this global batch in the form the config uses (lr-find's suggestion)."""
        if self.lr_base is None:
            return "optim.lr", lr
        return "optim.lr_base", lr * self.lr_base / self.resolved_lr(global_batch)


class ScheduleConfig(Section):
    name: str = "none"
    """Learning-rate schedule: none, step, cosine, onecycle (stepped per batch), reduce_on_plateau (on the monitored
    metric), or any torch.optim.lr_scheduler class (`StepLR`, `torch.optim.lr_scheduler:ExponentialLR`) or your own
    `package.module:Class`, built with `args`."""
    args: dict[str, Any] = Field(default_factory=dict)
    """A torch.optim.lr_scheduler (or your own) schedule: its constructor arguments, e.g. {step_size: 50, gamma: 0.1};
    checked against its signature before training."""
    @field_validator("name")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        return _check_torch_class("schedule.name", v, "torch.optim.lr_scheduler",
                                  ("none", "step", "cosine", "onecycle", "reduce_on_plateau"))

    interval: Literal["epoch", "step"] | None = None
    """A torch.optim.lr_scheduler schedule: step it after every epoch (default; ReduceLROnPlateau with the monitored
    metric) or after every optimizer step (default for OneCycleLR and CyclicLR)."""
    warmup_epochs: float = Field(0.0, ge=0)
    """Linear warm-up length in epochs (cosine and step)."""
    step_size: int = Field(10, gt=0)
    """step: multiply the LR by `gamma` every this many epochs."""
    gamma: float = Field(0.1, gt=0)
    """step: the LR multiplier."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """cosine: the final LR as a fraction of the peak."""
    pct_start: float = Field(0.25, gt=0, lt=1)
    """onecycle: fraction of training spent increasing the LR."""
    patience: int = Field(3, ge=0)
    """reduce_on_plateau: epochs without improvement before the LR is cut."""
    factor: float = Field(0.1, gt=0, lt=1)
    """reduce_on_plateau: the LR multiplier."""


def _check_torch_class(key: str, name: str, module: str, own: tuple[str, ...]) -> str:
    """kiln's own name, a class of the torch module (checked now, so `kiln config` and every command catch a typo),
    or a class of the user's code (`pkg.mod:Class`: imported only when it is built)."""
    if name in own or (":" in name and not name.startswith(module + ":")):
        return name
    import importlib

    from kiln.user_code import torch_class

    base = "Optimizer" if module == "torch.optim" else "LRScheduler"
    mod = importlib.import_module(module)
    try:
        torch_class(key, name, mod, getattr(mod, base), own)
    except KilnError as e:
        raise ValueError(str(e).removeprefix(f"{key}=")) from None
    return name


class EarlyStoppingConfig(Section):
    enabled: bool = False
    """Stop when the monitored metric has not improved for `patience` epochs."""
    monitor: str = "val/loss"
    """Metric to watch; checked before training starts."""
    mode: Literal["min", "max"] | None = None
    """Whether lower (min) or higher (max) is better. Unset: min for losses and errors (loss, mae, rmse), max for
    the rest."""
    patience: int = Field(5, gt=0)
    """Epochs without improvement before stopping."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest change that counts as an improvement."""


class CheckpointConfig(Section):
    monitor: str | None = None
    """Metric that decides `best.pt`; checked before training starts. Unset: the task's (val/acc for multiclass,
    val/f1_micro for multilabel, val/mae for regression)."""
    mode: Literal["min", "max"] | None = None
    """Whether lower (min) or higher (max) is better. Unset: min for losses and errors (loss, mae, rmse), max for
    the rest."""
    keep_top_k: int = Field(0, ge=0)
    """Also keep the k best epochs as `epoch-NNN.pt` (0 = only last.pt and best.pt)."""


class TrainerConfig(Section):
    epochs: int = Field(10, gt=0)
    """Number of passes over the training split (derived from max_steps when that is set)."""
    max_steps: int | None = Field(None, gt=0)
    """A training budget in optimizer steps instead of epochs: epochs = ceil(max_steps / steps per epoch).
    Recorded as trainer.epochs in the run's config.yaml."""
    min_steps: int | None = Field(None, gt=0)
    """At least this many optimizer steps: epochs = max(trainer.epochs, ceil(min_steps / steps per epoch)), so a
    dataset of a few hundred samples still gets enough updates while a large one trains trainer.epochs. Recorded
    as trainer.epochs in the run's config.yaml."""

    @model_validator(mode="after")
    def _one_step_budget(self) -> "TrainerConfig":
        if self.max_steps is not None and self.min_steps is not None:
            raise ValueError("set trainer.max_steps (an exact budget) or trainer.min_steps (a floor), not both")
        return self
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps. auto picks cuda, then mps, then cpu. Under DDP each process takes
    cuda:LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES)."""

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        """The device's spelling (whether it exists on this machine is checked when training starts)."""
        if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", v.strip()):
            close = difflib.get_close_matches(v, ["auto", "cpu", "cuda", "mps"], n=1, cutoff=0.3)
            hint = "; for a GPU use cuda (or cuda:N)" if v.lower().startswith("gpu") else \
                f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"{v!r} is not a device: use auto, cpu, cuda, cuda:N or mps{hint}")
        return v.strip()
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """DDP process-group backend: auto = nccl on CUDA, gloo on CPU. gloo lets several processes share a GPU."""
    precision: Literal["auto", "32", "bf16", "16"] = "auto"
    """auto = bf16 on GPUs with native bf16 (Ampere and newer), fp16 with a gradient scaler on older GPUs,
    32 on CPU. 16 uses a gradient scaler (CUDA only)."""
    compile: Literal[False, "default", "reduce-overhead", "max-autotune"] = False
    """torch.compile the model: false, or a mode (default | reduce-overhead | max-autotune). true = default."""
    deterministic: bool = False
    """Use deterministic algorithms and no TF32 (slower): bit-exact reruns and resumes on GPU too. Off, a GPU
    run autotunes its kernels (cudnn.benchmark) and uses TF32 for fp32 matmuls."""
    channels_last: Literal["auto", True, False] = "auto"
    """Store conv activations NHWC; auto turns it on for kiln's own conv models on CPU and GPU (faster there),
    and leaves models of your own (package.module:Class) as written."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the global gradient norm to this value."""
    accumulate: int = Field(1, gt=0)
    """Accumulate gradients over this many batches per optimizer step."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Deprecated: use task.label_smoothing (a value here is moved there, with a warning)."""
    nan_policy: Literal["stop", "skip_batch"] = "stop"
    """On a NaN/Inf loss: stop (keeping the last good checkpoint) or skip that batch."""
    fast_dev_run: bool = False
    """Run 2 training and 2 validation batches for 1 epoch to check the whole pipeline."""
    limit_train_batches: int | None = Field(None, gt=0)
    """Use at most this many training batches per epoch."""
    limit_val_batches: int | None = Field(None, gt=0)
    """Use at most this many validation batches."""
    overfit_batches: int = Field(0, ge=0)
    """Train on this many fixed batches (no augmentation, no shuffling) to check the model can overfit."""
    sync_batchnorm: bool = False
    """Under DDP, compute BatchNorm statistics over the global batch instead of each process's share."""
    test_after_fit: bool = True
    """Evaluate the best checkpoint on the test split when training ends."""
    log_every_n_steps: int = Field(25, gt=0)
    """Refresh the progress bar's loss every this many steps (each refresh reads one value from the device)."""
    ema: EmaConfig | None = None
    """Keep an exponential moving average of the weights, e.g. {decay: 0.999}: it is what is validated, what
    best.pt holds, and what test, predict, export and fine-tuning use (last.pt keeps the raw weights too)."""
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    """Early stopping."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Which checkpoints are kept."""

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_true_is_default(cls, v: Any) -> Any:
        return "default" if v is True else v


class EmaConfig(Section):
    decay: float = Field(0.999, gt=0, lt=1)
    """Weight of the old average at each update: avg = decay * avg + (1 - decay) * weights."""
    every: int = Field(1, gt=0)
    """Update the average every this many optimizer steps."""


class TaskConfig(Section):
    """What kind of problem this is: the loss, the metrics and the predictions follow from it."""

    name: Literal["multiclass", "multilabel", "regression"] = "multiclass"
    """multiclass: one label per sample (cross-entropy; accuracy, top-5 accuracy, macro F1; monitors val/acc).
    multilabel: any number of labels per sample, e.g. `cat|dog` in a CSV (binary cross-entropy per label; micro and
    macro F1, mAP; monitors val/f1_micro). regression: numeric targets in one or several columns (MSE, L1 or Huber
    on standardised targets; MAE, RMSE, R² in the original units; monitors val/mae)."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """multiclass: label smoothing of the training objective. The reported train/val/test loss stays plain
    cross-entropy; the smoothed objective is logged as train/objective."""
    class_weights: Literal["auto"] | list[float] | None = None
    """multiclass: weights of the classes in the training loss: auto = inverse frequency on the training split
    (n / (k x count), logged), or one weight per class. The reported loss stays unweighted cross-entropy; the
    weighted objective is logged as train/objective."""
    pos_weight: Literal["auto"] | list[float] | None = None
    """multilabel: weight of the positive term of each label's binary cross-entropy: auto = negatives / positives
    on the training split (logged), or one value per label. The reported loss stays unweighted."""
    threshold: float | list[float] = 0.5
    """multilabel: a label is predicted when its probability reaches this (one value, or one per label)."""
    tune_threshold: bool = False
    """multilabel: after training, choose each label's threshold for the best F1 on the validation split (with the
    best checkpoint) and record them as task.threshold in the run's config.yaml; the test uses them."""
    standardize: bool = True
    """regression: train on targets standardised with the training split's mean and std (recorded as
    target_mean/target_std); metrics and predictions are in the original units either way."""
    target_mean: list[float] | None = None
    """regression: the targets' mean used for standardisation. Unset: computed on the training split (recorded)."""
    target_std: list[float] | None = None
    """regression: the targets' standard deviation used for standardisation (see target_mean)."""
    loss: str | None = None
    """The training loss. Built in: cross_entropy (multiclass), bce (multilabel), mse / l1 / huber (regression;
    also the reported loss). Or an objective of your own, `package.module:function` taking (model output, targets)
    and returning a scalar (e.g. a pytorch-template project's `model.loss:focal_loss`), logged as train/objective
    while the reported loss stays the task's. Unset: the task's first built-in."""

    @model_validator(mode="after")
    def _settings_of_this_task(self) -> "TaskConfig":
        own = {"multiclass": {"label_smoothing", "class_weights"}, "multilabel": {"pos_weight", "threshold",
               "tune_threshold"}, "regression": {"standardize", "target_mean", "target_std"}}
        for task, keys in own.items():
            wrong = sorted(k for k in keys & self.model_fields_set if task != self.name
                           and getattr(self, k) != TaskConfig.model_fields[k].default)
            if wrong:
                default = TaskConfig.model_fields[wrong[0]].default
                raise ValueError(f"task.{wrong[0]} is a {task} setting; this task is {self.name} (task.name): remove "
                                 f"it, or set it to its default ({default})")
        losses = TASK_LOSSES[self.name]
        if self.loss is not None and ":" not in self.loss and self.loss not in losses:
            raise ValueError(f"task.loss={self.loss!r}: the {self.name} task's losses are {', '.join(losses)}, or "
                             "a function of yours as package.module:function")
        if isinstance(self.threshold, list) and not self.threshold:
            raise ValueError("task.threshold: give one value, or one per label")
        for t in self.threshold if isinstance(self.threshold, list) else [self.threshold]:
            if not 0 < t < 1:
                raise ValueError(f"task.threshold={t}: a probability threshold lies between 0 and 1")
        return self


TASK_LOSSES = {"multiclass": ("cross_entropy",), "multilabel": ("bce",), "regression": ("mse", "l1", "huber")}
TASK_MONITORS = {"multiclass": "val/acc", "multilabel": "val/f1_micro", "regression": "val/mae"}
LOWER_IS_BETTER = ("loss", "objective", "mae", "rmse", "mse")


def watched(section: "CheckpointConfig | EarlyStoppingConfig") -> tuple[str, str]:
    """(monitor, mode) of a checkpoint or early-stopping section, as the Config resolved them."""
    assert section.monitor is not None and section.mode is not None, "Config resolves the monitor and its mode"
    return section.monitor, section.mode


def better(metric: str) -> Literal["min", "max"]:
    """min for losses and errors (…/loss, …/mae, …/rmse), max for the rest (accuracy, F1, mAP, R²)."""
    return "min" if metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER else "max"


class WandbConfig(Section):
    project: str = "kiln"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user); unset: your default."""
    mode: Literal["online", "offline"] = "offline"
    """offline writes to RUN_DIR/wandb/ (upload later with `wandb sync`); online streams to the server."""


class MlflowConfig(Section):
    tracking_uri: str | None = None
    """MLflow tracking URI (http://host:5000, sqlite:///path/mlflow.db); unset: SQLite in <log.dir>/mlflow.db."""
    experiment: str | None = None
    """MLflow experiment; unset: the run's name."""


class LogConfig(Section):
    dir: Path = Path("runs")
    """Runs are written to <dir>/<name>/<YYYYmmdd-HHMMSS>/."""
    tensorboard: bool = True
    """Write TensorBoard event files to the run's tb/ folder."""
    progress: Literal["auto", "bar", "none"] = "auto"
    """Progress bar: auto shows it only on a terminal."""
    wandb: WandbConfig | None = None
    """Log to Weights & Biases (pip install -e .[wandb]); e.g. {project: my-project, mode: offline}."""
    mlflow: MlflowConfig | None = None
    """Log to MLflow (pip install -e .[mlflow]); e.g. {tracking_uri: http://localhost:5000} or {} for local files."""


class Config(Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    """Experiment name; runs go to <log.dir>/<name>/."""
    seed: int = 0
    """Seeds every random generator (python, numpy, torch, CUDA)."""
    code_dir: Path | None = None
    """A folder of your own code (relative to the config file) that kiln puts on the import path, so names such as
    `model.name: my_project.models:Net` resolve. Loading the config imports the modules it names from there."""
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _known_model(self) -> "Config":
        """kiln's own model names and their model.args, from the models' source (no torch import), so `kiln config`
        reports them; a model of your own is checked when its code is imported (kiln.preflight)."""
        from kiln.model_names import check_kiln_model

        check_kiln_model(self.model.name, self.model.args)
        return self

    @model_validator(mode="after")
    def _monitors_follow_the_task(self) -> "Config":
        checkpoint, stopping = self.trainer.checkpoint, self.trainer.early_stopping
        if checkpoint.monitor is None:
            checkpoint.monitor = TASK_MONITORS[self.task.name]
        if checkpoint.mode is None:
            checkpoint.mode = better(checkpoint.monitor)
        if stopping.mode is None:
            stopping.mode = better(stopping.monitor)
        return self

    @model_validator(mode="after")
    def _weighted_sampler_balances_classes(self) -> "Config":
        if self.data.sampler == "weighted" and self.task.name != "multiclass":
            hint = "task.pos_weight (auto) weighs rare labels" if self.task.name == "multilabel" else \
                "regression has no classes to balance"
            raise ValueError(f"data.sampler=weighted draws classes equally (multiclass); {hint}")
        return self

    @model_validator(mode="after")
    def _label_smoothing_belongs_to_the_task(self) -> "Config":
        old = self.trainer.label_smoothing
        if old:
            if self.task.label_smoothing and self.task.label_smoothing != old:
                raise ValueError(f"trainer.label_smoothing={old} and task.label_smoothing="
                                 f"{self.task.label_smoothing} disagree; set task.label_smoothing only")
            log.warning("trainer.label_smoothing is deprecated: use task.label_smoothing=%g", old)
            self.task.label_smoothing, self.trainer.label_smoothing = old, 0.0
        return self

    @model_validator(mode="after")
    def _on_bad_row_belongs_to_the_data(self) -> "Config":
        text, data = self.data.text, self.data
        if "on_bad_row" in text.model_fields_set and text.on_bad_row != data.on_bad_row:
            if "on_bad_row" in data.model_fields_set:
                raise ValueError(f"data.text.on_bad_row={text.on_bad_row} and data.on_bad_row={data.on_bad_row} "
                                 "disagree; set data.on_bad_row only")
            log.warning("data.text.on_bad_row is deprecated: use data.on_bad_row=%s", text.on_bad_row)
            data.on_bad_row = text.on_bad_row
        if text.on_bad_row != data.on_bad_row:
            text.on_bad_row = data.on_bad_row  # the text readers see the one setting
        return self

    @model_validator(mode="after")
    def _pretrained_weights_bring_their_normalisation(self) -> "Config":
        # Every torchvision ImageNet classification weight was trained on inputs normalised with these values;
        # fine-tuning on one's own photos must feed them the same way.
        if self.model.pretrained == "torchvision" and self.data.name in ("image_folder", "image_csv") \
                and self.data.mean is None and self.data.std is None:
            self.data.mean, self.data.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        return self

    @model_validator(mode="after")
    def _schedule_needs_validation(self) -> "Config":
        plateau = ("reduce_on_plateau", "ReduceLROnPlateau", "torch.optim.lr_scheduler:ReduceLROnPlateau")
        if self.schedule.name in plateau and self.data.val_split == 0:
            raise ValueError(f"schedule.name={self.schedule.name} needs a validation split (data.val_split > 0)")
        return self


# --------------------------------------------------------------------------- loading

def read_file(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML/JSON config file, merging its `base:` chain (paths relative to the file)."""
    path = Path(path)
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise KilnError(f"the base: chain of config files loops: {cycle}; remove the base: that points back")
    if not path.is_file():
        from kiln.shipped import missing_hint

        raise KilnError(f"config file not found: {path}" + ("" if chain else missing_hint(path)))
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise KilnError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise KilnError(f"{path} must hold a mapping of config sections, not {type(raw).__name__}")
    if isinstance(raw.get("code_dir"), str):  # relative to the file that says it, wherever kiln runs
        raw["code_dir"] = str((path.parent / raw["code_dir"]).resolve())
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise KilnError(f"{path}: base: must be the path of another config file, not {base!r}")
    return deep_merge(read_file(path.parent / base, (*chain, path.resolve())), raw)


# Keys that say the same thing in two forms: one set by the later layer (a derived file, the command line) replaces
# the other of the earlier one, so `optim.lr=0.05` on a config that uses optim.lr_base runs at 0.05.
ALTERNATIVES = (("lr", "lr_base"),)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge `over` into `base` key by key. When `over` switches a component to another `name`, the base's
    `args` belong to the old component and are dropped rather than merged; a key of ALTERNATIVES in `over` drops
    its other form from `base`."""
    out = copy.deepcopy(base)
    if "name" in over and "name" in out and over["name"] != out["name"]:
        out.pop("args", None)
    for a, b in ALTERNATIVES:
        for given, other in ((a, b), (b, a)):
            if given in over and given not in base and over.get(other) is None:
                out.pop(other, None)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict) and value and isinstance(out.get(key), list) and all(
                str(k).isdigit() for k in value):  # `model.args.channels.0=16`: one element of a list
            out[key] = _set_items(out[key], value, key)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_items(items: list[Any], values: dict[str, Any], key: str) -> list[Any]:
    out = copy.deepcopy(items)
    for index, value in values.items():
        if int(index) >= len(out):
            raise KilnError(f"{key}.{index}: {key} has {len(out)} elements (indices 0..{len(out) - 1})")
        out[int(index)] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ["optim.lr=0.05", "trainer.epochs=3"] into a nested dict; values are parsed as YAML."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise KilnError(f"override {item!r} is not of the form key.path=value (e.g. optim.lr=0.05)")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            values[key.strip()] = text
    return nest(values)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1} (the inverse of `nest`; empty dicts stay values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 0.1} -> {"optim": {"lr": 0.1}}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise KilnError(f"{key!r} conflicts with another value given for {part!r}")
        node[parts[-1]] = value
    return out


def build_config(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise KilnError(explain(e)) from None


def load_config(path: Path | str | None, overrides: Sequence[str] = (), base: dict[str, Any] | None = None) -> Config:
    """Load a config file (or start from `base`, e.g. a run's saved config) and apply overrides."""
    if path is not None:
        from kiln.shipped import resolve

        path = resolve(path)  # a file path, else a shipped config's name (kiln train fashion_mnist)
    raw = read_file(Path(path)) if path is not None else copy.deepcopy(base or {})
    given = parse_overrides(list(overrides))
    cfg = build_config(_command_line_wins(deep_merge(raw, given), given))
    if cfg.code_dir is not None:
        _import_from(cfg.code_dir)
    return cfg


def _command_line_wins(merged: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """trainer.epochs (or a step budget) set on the command line runs: a step floor or budget from the file
    (trainer.min_steps / max_steps, which would otherwise decide the epochs) yields, and the console says so."""
    trainer, asked = merged.get("trainer") or {}, given.get("trainer") or {}
    if not isinstance(trainer, dict) or not isinstance(asked, dict):
        return merged
    for key in ("min_steps", "max_steps"):
        if key in asked or trainer.get(key) is None or not {"epochs", "min_steps", "max_steps"} & set(asked):
            continue
        given_key = next(k for k in ("epochs", "min_steps", "max_steps") if k in asked)
        logging.getLogger("kiln").warning(
            "trainer.%s=%s from the command line runs: the config's trainer.%s=%s yields (set it on the command "
            "line too to keep it)", given_key, asked[given_key], key, trainer[key])
        trainer[key] = None
    return merged


def _import_from(folder: Path) -> None:
    import sys

    if not Path(folder).is_dir():
        raise KilnError(f"code_dir={folder} is not a folder (it is relative to the config file that sets it)")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def upgrade_saved(raw: dict[str, Any]) -> dict[str, Any]:
    """A config that kiln itself saved (a run's config.yaml, a checkpoint's config) in an older layout, brought
    to today's without the deprecation warnings meant for config files people write."""
    raw = copy.deepcopy(raw)
    trainer, task = raw.get("trainer") or {}, raw.setdefault("task", {})
    if trainer.get("label_smoothing") and not task.get("label_smoothing"):  # format 1: the trainer owned it
        task["label_smoothing"] = trainer.pop("label_smoothing")
    return raw


def to_yaml(cfg: Config, resolved: dict[str, str] | None = None) -> str:
    """The config as YAML; `resolved`: values kiln derived for this run (key -> how), appended as comments so the
    file still loads as the config the user wrote."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    if resolved:
        text += "# resolved by kiln for this run:\n" + "".join(f"#   {k}: {v}\n" for k, v in resolved.items())
    return text


def resolved_values(cfg: Config, world_size: int = 1) -> dict[str, str]:
    """What kiln derives from the config for a run of `world_size` processes, for config.yaml's comments."""
    out: dict[str, str] = {}
    if cfg.optim.lr_base is not None:
        batch = cfg.data.batch_size * cfg.trainer.accumulate * world_size
        out["optim.lr"] = (f"{cfg.optim.resolved_lr(batch):.6g} (lr_base {cfg.optim.lr_base:g} per "
                           f"{cfg.optim.lr_base_size}, {cfg.optim.scaling()}-scaled to the global batch {batch})")
    return out


def json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kiln config"
    schema.setdefault("properties", {})["base"] = {
        "type": "string", "description": "Path of a config file this one extends (merged key by key)."}
    return schema


def schema_markdown(key: str | None = None) -> str:
    """Every config key as Markdown tables (one per section: key, type, default, description); `key` narrows it
    to a section (`data.augment`) or one key (`optim.lr`)."""
    sections: list[tuple[str, type[BaseModel]]] = [("", Config)]
    out: list[str] = []
    while sections:
        prefix, model = sections.pop(0)
        rows = []
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            sub = _section_type(field.annotation)
            if sub is not None:
                sections.append((path + ".", sub))
                continue
            if key is None or path == key or path.startswith(key + ".") or prefix.startswith(key + "."):
                default = "required" if field.is_required() else \
                    "(computed)" if field.default_factory is not None else repr(field.default)
                text = " ".join((field.description or "").split()).replace("|", "\\|")
                rows.append(f"| `{path}` | {_type_name(field.annotation)} | `{default}` | {text} |")
        if rows:
            title = prefix.rstrip(".") or "top level"
            out += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    if not out:
        raise KilnError(f"no config key {key!r}{_did_you_mean(tuple(key.split('.'))) if key else ''}")
    return "\n".join(out)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _type_name(annotation: Any) -> str:
    """`int | None` -> int or null; Literal['a', 'b'] -> a \\| b."""
    import typing

    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return name.replace("|", "or")


# --------------------------------------------------------------------------- messages

def explain(error: ValidationError) -> str:
    """One readable line per problem, with a did-you-mean for unknown keys."""
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
        # Union types report one error per member; the field name is enough for the user.
        loc = ".".join(p for p in loc.split(".") if p not in {"int", "float", "bool", "str", "none", "literal"}
                       and not re.match(r"(constrained-\w+|tuple\[|list\[|dict\[)", p))
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'{_did_you_mean(err['loc'])}")
        else:
            where = f"'{loc}'" if loc else "config"
            msg = err["msg"].removeprefix("Value error, ")  # pydantic's wrapping of a validator's ValueError
            got = err.get("input")
            # a section-level check names what is wrong itself; repeating the whole section adds nothing
            lines.append(f"{where}: {msg}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    unique = list(dict.fromkeys(lines))
    return "invalid config:\n  " + "\n  ".join(unique)


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = list(model.model_fields)
    prefix = ".".join(str(p) for p in loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f" — did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"
    return f" — valid keys{' in ' + repr(prefix) if prefix else ''}: {', '.join(known)}"

