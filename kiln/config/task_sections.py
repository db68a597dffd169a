"""The task section: one schema per task, chosen by `task.name` (a discriminated union). A setting of another task
(`task.threshold` under multiclass) is therefore not in the schema at all: an unknown key, reported by the error
explainer as the other task's setting. Configs that kiln saved before (format 2 dumped every task's settings under
every task) are brought to this layout by kiln.core.upgrade."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator
from typing_extensions import Self

from kiln.config.sections import Section

TASK_LOSSES = {"multiclass": ("cross_entropy",), "multilabel": ("bce",), "regression": ("mse", "l1", "huber"),
               "multihead": ("cross_entropy",), "segmentation": ("cross_entropy",), "detection": ("model",)}


class _TaskSettings(Section):
    """What every task's settings check: the loss is one of the task's, or the user's own function."""

    if TYPE_CHECKING:  # declared by each task (a field here would come first in config.yaml)
        name: str
        loss: str | None
    # Why data.sampler=weighted does not fit the task (None: it does): it draws every class equally often.
    no_weighted_sampler: ClassVar[str | None] = None
    # What best.pt is kept by when trainer.checkpoint.monitor is unset: the task's headline metric on validation.
    default_monitor: ClassVar[str] = "val/acc"

    @model_validator(mode="after")
    def _a_loss_of_this_task(self) -> Self:
        losses = TASK_LOSSES[self.name]
        if self.loss is not None and ":" not in self.loss and self.loss not in losses:
            raise ValueError(f"task.loss={self.loss!r}: the {self.name} task's losses are {', '.join(losses)}, or "
                             "a function of yours as package.module:function")
        return self


class DistillConfig(Section):
    """Knowledge distillation: a trained teacher's softened answers join the training loss."""

    teacher: str
    """The teacher: a kiln run folder (its model on the training device, under the run's precision), trained on
    the same classes and on inputs of the same form (image size and channels; normalisation may differ)."""
    checkpoint: str = "best"
    """Which of the teacher run's checkpoints (best | last | a name such as averaged | a path)."""
    alpha: float = Field(0.5, ge=0, le=1)
    """The teacher's share of the loss: (1 - alpha) x the task's loss on the labels + alpha x T² x the distance to
    the teacher's answers softened by the temperature (KL divergence for classes, binary cross-entropy for labels).
    1 = learn from the teacher alone."""
    temperature: float = Field(4.0, gt=0)
    """T: how much both answers are softened before they are compared (Hinton et al.: 2 to 5)."""


class MulticlassTaskConfig(_TaskSettings):
    """One label per sample."""

    name: Literal["multiclass"] = "multiclass"
    """multiclass: one label per sample (cross-entropy; accuracy, top-5 accuracy, macro F1; monitors val/acc).
    multilabel: any number of labels per sample, e.g. `cat|dog` in a CSV (binary cross-entropy per label; micro and
    macro F1, mAP; monitors val/f1_micro). regression: numeric targets in one or several columns (MSE, L1 or Huber
    on standardised targets; MAE, RMSE, R² in the original units; monitors val/mae). Each task has its own
    settings below."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Label smoothing of the training objective. The reported train/val/test loss stays plain cross-entropy; the
    smoothed objective is logged as train/objective."""
    class_weights: Literal["auto"] | list[float] | None = None
    """Weights of the classes in the training loss: auto = inverse frequency on the training split (n / (k x
    count), logged), or one weight per class. The reported loss stays unweighted cross-entropy; the weighted
    objective is logged as train/objective."""
    loss: str | None = None
    """The training loss: cross_entropy (unset: the same). Or an objective of your own, `package.module:function`
    taking (model output, targets) and returning a scalar (e.g. a pytorch-template project's `model.loss:focal_loss`),
    logged as train/objective while the reported loss stays the task's."""
    distill: DistillConfig | None = None
    """Learn from a trained teacher too ({teacher: RUN_DIR, alpha: 0.5, temperature: 4}): its answers on the same
    augmented batch join the loss; logged as train/objective while the reported loss stays the task's."""


class MultilabelTaskConfig(_TaskSettings):
    """Any number of labels per sample."""

    no_weighted_sampler = "task.pos_weight (auto) weighs rare labels"
    default_monitor = "val/f1_micro"
    name: Literal["multilabel"] = "multilabel"
    """multilabel (see task.name under multiclass for the three tasks)."""
    pos_weight: Literal["auto"] | list[float] | None = None
    """Weight of the positive term of each label's binary cross-entropy: auto = negatives / positives on the
    training split (logged), or one value per label. The reported loss stays unweighted."""
    threshold: float | list[float] = 0.5
    """A label is predicted when its probability reaches this (one value, or one per label)."""
    tune_threshold: bool = False
    """After training, choose each label's threshold for the best F1 on the validation split (with the best
    checkpoint) and record them as task.threshold in the run's config.yaml; the test uses them."""
    loss: str | None = None
    """The training loss: bce (unset: the same). Or an objective of your own, `package.module:function`
    taking (model output, targets) and returning a scalar (e.g. a pytorch-template project's `model.loss:focal_loss`),
    logged as train/objective while the reported loss stays the task's."""
    distill: DistillConfig | None = None
    """Learn from a trained teacher too ({teacher: RUN_DIR, alpha: 0.5, temperature: 4}): its label probabilities
    on the same augmented batch join the loss; logged as train/objective while the reported loss stays the task's."""

    @model_validator(mode="after")
    def _thresholds_are_probabilities(self) -> Self:
        if isinstance(self.threshold, list) and not self.threshold:
            raise ValueError("task.threshold: give one value, or one per label")
        for t in self.threshold if isinstance(self.threshold, list) else [self.threshold]:
            if not 0 < t < 1:
                raise ValueError(f"task.threshold={t}: a probability threshold lies between 0 and 1")
        return self


class RegressionTaskConfig(_TaskSettings):
    """Numeric targets."""

    no_weighted_sampler = "regression has no classes to balance"
    default_monitor = "val/mae"
    name: Literal["regression"] = "regression"
    """regression (see task.name under multiclass for the three tasks)."""
    standardize: bool = True
    """Train on targets standardised with the training split's mean and std (recorded as target_mean/target_std);
    metrics and predictions are in the original units either way."""
    target_mean: list[float] | None = None
    """The targets' mean used for standardisation. Unset: computed on the training split (recorded)."""
    target_std: list[float] | None = None
    """The targets' standard deviation used for standardisation (see target_mean)."""
    loss: str | None = None
    """The training loss, also the reported loss: mse, l1 or huber (unset: mse).
    Or an objective of your own, `package.module:function`
    taking (model output, targets) and returning a scalar (e.g. a pytorch-template project's `model.loss:focal_loss`),
    logged as train/objective while the reported loss stays the task's."""


class MultiheadTaskConfig(_TaskSettings):
    """Several class columns per sample, one head each on one backbone."""

    no_weighted_sampler = "multihead has several classes per sample; weigh the heads with task.weights"
    default_monitor = "val/acc_all"
    name: Literal["multihead"] = "multihead"
    """multihead: one class in each of several label columns (data.label_column: [mask, gender, age]); one
    backbone, one head per column; cross-entropy per head, summed with task.weights; accuracy and macro F1 per
    head (val/acc/<column>) and val/acc_all (every head right)."""
    weights: list[float] | None = None
    """The heads' weights in the loss, one per label column (unset: 1 each)."""
    combine: Literal["none", "product"] = "none"
    """product: kiln predict also writes the combined class — the index of the heads' classes in row-major order
    of the columns as listed (a competition's single label from mask x gender x age)."""
    columns: list[str] | None = None
    """The label columns, in order (unset: read from the data, recorded)."""
    heads: list[int] | None = None
    """Each column's class count (unset: read from the data, recorded)."""
    loss: str | None = None
    """cross_entropy (unset: the same), or an objective of your own, `package.module:function` taking (model
    output, targets (batch, columns)) and returning a scalar."""

    @model_validator(mode="after")
    def _weights_are_positive(self) -> Self:
        if self.weights is not None and (not self.weights or min(self.weights) < 0):
            raise ValueError("task.weights: one non-negative weight per label column")
        return self


class SegmentationTaskConfig(_TaskSettings):
    """A class per pixel."""

    no_weighted_sampler = "segmentation has a class per pixel, not per image, to balance"
    default_monitor = "val/miou"
    name: Literal["segmentation"] = "segmentation"
    """segmentation: a class per pixel (data.name: segmentation_folder, or your own Dataset returning (image, mask));
    cross-entropy over the labelled pixels (mask value 255: ignored); mIoU, pixel accuracy, per-class IoU; monitors
    val/miou."""
    dice_weight: float = Field(0.0, ge=0)
    """Adds this times the soft Dice loss (over the classes present in the batch) to the cross-entropy."""
    aux_weight: float = Field(0.5, ge=0)
    """A model with an auxiliary head (torchvision's FCN and DeepLabV3 with model.args.aux_loss=true, or their
    pretrained weights): its cross-entropy, times this, joins the training loss (torchvision's references: 0.5).
    Scored and predicted is the main head (`out`) alone."""
    loss: str | None = None
    """cross_entropy (unset: the same), or an objective of your own, `package.module:function` taking (model
    output (batch, classes, H, W), masks (batch, H, W)) and returning a scalar."""


class DetectionTaskConfig(_TaskSettings):
    """Boxes per image."""

    no_weighted_sampler = "detection has boxes of several classes per image, not one class to balance"
    default_monitor = "val/map"
    name: Literal["detection"] = "detection"
    """detection: boxes and their classes per image (data.name: coco_detection or yolo_detection); the model's own
    losses (torchvision's detectors return them in training); mAP@[.5:.95] and mAP@.5 (torchmetrics, pycocotools);
    monitors val/map."""
    score_threshold: float = Field(0.05, ge=0, lt=1)
    """Detections below this score are dropped (evaluation and predictions)."""
    max_detections: int = Field(100, gt=0)
    """At most this many detections per image, the highest scores first."""
    category_ids: list[int] | None = None
    """The dataset's id of each output, in kiln's order (background first: -1), for kiln predict's COCO results
    (unset: read from the data, recorded)."""
    loss: str | None = None
    """model (unset: the same): the sum of the losses the detector returns in training."""


class OwnTaskConfig(Section):
    """A task of your own: a subclass of kiln.tasks.Task (kiln's own tasks implement the same interface)."""

    name: str
    """`package.module:Class`, a subclass of kiln.tasks.Task: its loss, metrics and predictions (see the docs'
    Tasks page). Checked, with its arguments, before any data is read."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the task's constructor (its settings), checked against its signature."""

    no_weighted_sampler: ClassVar[str | None] = None
    # A task of yours may name no headline: best.pt follows the validation loss unless the config says otherwise.
    default_monitor: ClassVar[str] = "val/loss"
    loss: ClassVar[None] = None  # a task of yours is its own loss

    @model_validator(mode="after")
    def _names_code(self) -> Self:
        if ":" not in self.name:
            raise ValueError(f"task.name={self.name!r}: kiln's tasks are {', '.join(TASK_CONFIGS)}; a task of your own "
                             "is package.module:Class")
        return self


TASK_CONFIGS: dict[str, type[_TaskSettings]] = {
    "multiclass": MulticlassTaskConfig, "multilabel": MultilabelTaskConfig, "regression": RegressionTaskConfig,
    "multihead": MultiheadTaskConfig, "segmentation": SegmentationTaskConfig, "detection": DetectionTaskConfig}
OWN = "own"  # the schema of every `package.module:Class` task


def _task_name(value: Any) -> str | None:
    """Which task's schema a task section is read with: its name (a task of your own: `own`); multiclass when it
    names none."""
    name = value.get("name", "multiclass") if isinstance(value, dict) else getattr(value, "name", None)
    if isinstance(name, str) and ":" in name:
        return OWN
    return name if isinstance(name, str) and name in TASK_CONFIGS else None


TaskConfig = Annotated[
    Annotated[MulticlassTaskConfig, Tag("multiclass")]
    | Annotated[MultilabelTaskConfig, Tag("multilabel")]
    | Annotated[RegressionTaskConfig, Tag("regression")]
    | Annotated[MultiheadTaskConfig, Tag("multihead")]
    | Annotated[SegmentationTaskConfig, Tag("segmentation")]
    | Annotated[DetectionTaskConfig, Tag("detection")]
    | Annotated[OwnTaskConfig, Tag(OWN)],
    Discriminator(_task_name, custom_error_type="task_name",
                  custom_error_message="the task section names its task: task.name is multiclass, multilabel or "
                                       "regression (or multihead, segmentation, detection), or a task of your own as "
                                       "package.module:Class")]


def task_config(**values: Any) -> (MulticlassTaskConfig | MultilabelTaskConfig | RegressionTaskConfig
                                  | MultiheadTaskConfig | SegmentationTaskConfig | DetectionTaskConfig
                                  | OwnTaskConfig):
    """The task section of `values` (`name` picks the task; multiclass when it is left out)."""
    name = values.get("name", "multiclass")
    if ":" in name:
        return OwnTaskConfig(**values)
    return TASK_CONFIGS[name](**values)  # type: ignore[return-value]


def owner_of(key: str) -> str | None:
    """The task a task setting belongs to (None: no task has it, or every task has it)."""
    owners = [name for name, cls in TASK_CONFIGS.items() if key in cls.model_fields]
    return owners[0] if len(owners) == 1 else None
