"""The config's sections below the root: one pydantic model per section, each field documented (the docstrings
become `kiln schema`). The data sections live in `data_sections`, the root `Config` in `root`."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)
from typing_extensions import Self

from kiln.core.errors import KilnError
from kiln.core.user_code import names_code

log = logging.getLogger("kiln")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Section(BaseModel):
    """A config section. Frozen once validated: what kiln derives for a run (image size from the data, epochs from
    steps, a tuned threshold) is a new config made by `with_values`, never a write into the one the user gave."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    def with_values(self, values: Mapping[str, Any]) -> Self:
        """A copy with `values` (dotted keys below this section: `data.image_size`, `trainer.epochs`) replaced. The
        values are kiln's own (derived, already valid) and are marked as set."""
        here: dict[str, Any] = {}
        below: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            head, _, rest = key.partition(".")
            if head not in type(self).model_fields:
                raise KeyError(f"{type(self).__name__} has no field {head!r}")
            if rest:
                below.setdefault(head, {})[rest] = value
            else:
                here[head] = value
        here.update({head: getattr(self, head).with_values(inner) for head, inner in below.items()})
        return self.model_copy(update=here)


class ModelConfig(Section):
    name: str = "cnn"
    """Registered model name (mlp, cnn, resnet18/34/50, embedding_bag, gru, transformer, unet, fcos_small), `torchvision:NAME`,
    `timm:NAME`, `hf:NAME_OR_PATH` (a Hugging Face text encoder), `smp:NAME` (segmentation-models-pytorch: Unet,
    FPN, DeepLabV3Plus, ... with model.args.encoder_name) or `package.module:Class`."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the model's constructor; checked against its signature before training."""
    pretrained: str | None = None
    """Start from weights: `torchvision` (torchvision's weights for a torchvision:NAME model or kiln's resnets, see
    `weights`), `timm` (a timm:NAME model's weights from the Hugging Face cache), `hf` (an hf:NAME model's own
    weights, loaded by transformers), a kiln run folder (its best checkpoint; a folder of runs: the newest), a
    kiln checkpoint (a .pt file or an FSDP run's .dcp folder), a `.safetensors` file, a state_dict `.pth`/`.pt`
    file (loaded weights_only), or a Hugging Face save_pretrained folder (config.json + model.safetensors). Only files
    already on this machine are used unless model.download is true."""
    weights: str = "DEFAULT"
    """Which of the library's weights: torchvision's enum member, e.g. IMAGENET1K_V2, or a timm pretrained tag,
    e.g. augreg_in21k_ft_in1k (DEFAULT = the library's default)."""
    download: bool = False
    """Fetch pretrained weights that are not on this machine yet (torchvision's URL into $TORCH_HOME, the Hugging
    Face Hub into $HF_HOME). Off: a missing file is an error naming where kiln looked and how to get it."""
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
    """Learning-rate schedule: none, step, cosine, linear (decay to min_lr_ratio, the usual fine-tuning schedule),
    onecycle (stepped per batch), reduce_on_plateau (on the monitored
    metric), or any torch.optim.lr_scheduler class (`StepLR`, `torch.optim.lr_scheduler:ExponentialLR`) or your own
    `package.module:Class`, built with `args`."""
    args: dict[str, Any] = Field(default_factory=dict)
    """A torch.optim.lr_scheduler (or your own) schedule: its constructor arguments, e.g. {step_size: 50, gamma: 0.1};
    checked against its signature before training."""
    @field_validator("name")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        return _check_torch_class("schedule.name", v, "torch.optim.lr_scheduler",
                                  ("none", "step", "cosine", "linear", "onecycle", "reduce_on_plateau"))

    interval: Literal["epoch", "step"] | None = None
    """A torch.optim.lr_scheduler schedule: step it after every epoch (default; ReduceLROnPlateau with the monitored
    metric) or after every optimizer step (default for OneCycleLR and CyclicLR)."""
    warmup_epochs: float = Field(0.0, ge=0)
    """Linear warm-up length in epochs (cosine, linear and step)."""
    step_size: int = Field(10, gt=0)
    """step: multiply the LR by `gamma` every this many epochs."""
    gamma: float = Field(0.1, gt=0)
    """step: the LR multiplier."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """cosine, linear: the final LR as a fraction of the peak."""
    pct_start: float = Field(0.25, gt=0, lt=1)
    """onecycle: fraction of training spent increasing the LR."""
    patience: int = Field(3, ge=0)
    """reduce_on_plateau: epochs without improvement before the LR is cut."""
    factor: float = Field(0.1, gt=0, lt=1)
    """reduce_on_plateau: the LR multiplier."""


def _check_torch_class(key: str, name: str, module: str, own: tuple[str, ...]) -> str:
    """kiln's own name, a class of the torch module (checked now, so `kiln config` and every command catch a typo),
    or a class of the user's code (`pkg.mod:Class`: imported only when it is built)."""
    if name in own or (names_code(name) and not name.startswith(module + ":")):
        return name
    import importlib

    from kiln.core.user_code import torch_class

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
    keep_last_k: int = Field(0, ge=0)
    """Also keep the last k epochs as `epoch-NNN.pt` (what `kiln average RUN --last K` averages)."""


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
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """How several processes share the model: ddp (each holds it whole; auto) or fsdp (PyTorch's FSDP2: each
    holds 1/N of the parameters, gradients and optimizer state — for models that do not fit one GPU)."""
    fsdp: FsdpConfig = Field(default_factory=lambda: FsdpConfig())
    """FSDP's settings (trainer.strategy=fsdp)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of keeping them (less memory, about one
    more forward pass); the blocks as trainer.fsdp.blocks finds them. Any strategy."""
    test_after_fit: bool = True
    """Evaluate the best checkpoint on the test split when training ends."""
    memory_snapshot: bool = False
    """CUDA: record the allocator's history while training, and on out of memory write it to
    memory_snapshot.pickle in the run folder (open it at https://pytorch.org/memory_viz). Costs a little speed."""
    dist_timeout: float = Field(600, gt=0)
    """Several processes: when a training step, an evaluation batch or a collective makes no progress for this many
    seconds, every stalled rank writes hang-rank<N>.txt (where it was, the collective it waited in, every thread's
    stack) into the run folder and the group stops with one message naming the ranks that did not arrive."""
    log_every_n_steps: int = Field(25, gt=0)
    """Refresh the progress bar's loss every this many steps (each refresh reads one value from the device)."""
    ema: EmaConfig | None = None
    """Keep an exponential moving average of the weights, e.g. {decay: 0.999}: it is what is validated, what
    best.pt holds, and what test, predict, export and fine-tuning use (last.pt keeps the raw weights too)."""
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    """Early stopping."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Which checkpoints are kept."""
    profile: ProfileConfig | None = None
    """Profile some training steps ({steps: 20}; `kiln train --profile`): where each step's time goes — waiting for
    data, forward, backward, the optimizer, host syncs — written to profile.json and profile/trace.json.gz (open in
    Perfetto or TensorBoard), with the setting to change; then training goes on."""

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_true_is_default(cls, v: Any) -> Any:
        return "default" if v is True else v


class ProfileConfig(Section):
    """torch.profiler over a few training steps (trainer.profile)."""

    wait: int = Field(5, ge=0)
    """Steps left alone first (compilation, cuDNN autotuning, DataLoader workers starting)."""
    warmup: int = Field(3, ge=0)
    """Steps the profiler runs without recording (its own start-up)."""
    steps: int = Field(20, gt=0)
    """Steps recorded and measured."""
    stop: bool = False
    """Stop training once the profile is written (`kiln train --profile-only`): the epoch ends there, validation
    runs on one batch, no test."""


class EmaConfig(Section):
    decay: float = Field(0.999, gt=0, lt=1)
    """Weight of the old average at each update: avg = decay * avg + (1 - decay) * weights."""
    every: int = Field(1, gt=0)
    """Update the average every this many optimizer steps."""


class FsdpConfig(Section):
    blocks: list[str] | None = None
    """Classes of the modules sharded one by one (e.g. [BertLayer]); unset: the model's repeated units by class
    name (…Layer, …Block, Bottleneck, …Stage: transformer layers, ResNet and ConvNeXt blocks)."""
    reshard_after_forward: bool = True
    """Free a block's gathered parameters after its forward pass (gathered again for the backward): less memory,
    more communication."""
    cpu_offload: bool = False
    """Keep the sharded parameters, gradients and optimizer state in host memory (CUDA only)."""
    checkpoint: Literal["sharded", "full"] = "sharded"
    """sharded: every rank writes its own shards into checkpoints/<name>.dcp/ (no rank holds the whole state);
    full: rank 0 gathers the whole state and writes one <name>.pt, as under DDP. kiln reads either kind anywhere."""


LOWER_IS_BETTER = ("loss", "objective", "mae", "rmse", "mse")


def watched(section: "CheckpointConfig | EarlyStoppingConfig") -> tuple[str, str]:
    """(monitor, mode) of a checkpoint or early-stopping section of a planned config (the run plan fills in the
    defaults that follow the task and the metric: kiln.config.with_default_monitors)."""
    assert section.monitor is not None and section.mode is not None, "the run plan resolves the monitor and its mode"
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
    remote: str | None = None
    """Mirror the run folder to an object store after each checkpoint and at the end, e.g. s3://bucket/runs (the run
    goes to <remote>/<name>/<YYYYmmdd-HHMMSS>; each file under a temporary key, then published, with its SHA-256 in
    kiln-manifest.json; nothing published is deleted). `kiln train CONFIG --resume auto` on a fresh machine fetches
    the newest unfinished run from there. Credentials: the store's own environment/config files."""

