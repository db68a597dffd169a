"""Semantic segmentation: a class per pixel. The model returns class scores (B, C, H, W) — a tensor, or
torchvision's dict whose `out` entry they are (an `aux` head's scores join the training loss, task.aux_weight);
targets are masks (B, H, W) of class indices, 255 for pixels that count nowhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kiln.config import SegmentationTaskConfig
from kiln.core.errors import KilnError
from kiln.tasks.base import Metrics, Prediction, Task, call_model

IGNORE = 255
PALETTE = ["red", "blue", "green", "orange", "purple", "cyan", "magenta", "yellow", "brown", "pink"] * 26


class SegmentationTask(Task):
    """Cross-entropy over the labelled pixels (optionally plus task.dice_weight x soft Dice); mIoU, pixel
    accuracy and (in tests) the IoU of each class, summed over the processes by torchmetrics."""

    name = "segmentation"
    train_metric = "pixel_acc"
    headline = "miou"
    summary_metrics = ("loss", "miou", "pixel_acc")
    label_is_the_answer = False  # the label summarises the image's marks
    noun = "classes"
    class_per_sample = False
    sources = "a segmentation folder (data.name: segmentation_folder) or your own Dataset of (image, mask)"
    file_hint = "masks"
    pixel_outputs = True
    output_doc = "class scores per pixel (batch, classes, height, width); argmax over classes gives the mask"

    def __init__(self, cfg: SegmentationTaskConfig, num_classes: int | None):
        super().__init__(cfg, num_classes)
        self.cfg: SegmentationTaskConfig = cfg
        self.aux: torch.Tensor | None = None  # the auxiliary head's scores of the training batch in flight

    def outputs(self, model: Any, inputs: Any, targets: Any = None) -> Any:
        """The main head's scores; in training (targets given) an auxiliary head's are kept for the objective."""
        raw = call_model(model, inputs)
        aux = raw.get("aux") if targets is not None and isinstance(raw, dict) else None
        self.aux = aux if isinstance(aux, torch.Tensor) else None
        return self.logits(raw)

    def logits(self, outputs: Any) -> torch.Tensor:
        if isinstance(outputs, dict) and isinstance(outputs.get("out"), torch.Tensor):
            return outputs["out"]  # torchvision's segmentation models
        return super().logits(outputs)

    # -- training
    def task_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(outputs, targets, ignore_index=IGNORE)
        if self.cfg.dice_weight:
            loss = loss + self.cfg.dice_weight * _soft_dice(outputs, targets)
        aux, self.aux = self.aux, None  # used once: the batch it came with
        if aux is not None and self.cfg.aux_weight:
            loss = loss + self.cfg.aux_weight * F.cross_entropy(aux, targets, ignore_index=IGNORE)
        return loss

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each sample's mean cross-entropy over its labelled pixels, summed over the batch."""
        per_pixel = F.cross_entropy(outputs.float(), targets, ignore_index=IGNORE, reduction="none")
        labelled = (targets != IGNORE).flatten(1).sum(1).clamp_min(1)
        return (per_pixel.flatten(1).sum(1) / labelled).sum()

    def train_score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each sample's pixel accuracy (over its labelled pixels), summed."""
        labelled = targets != IGNORE
        right = ((outputs.argmax(1) == targets) & labelled).flatten(1).sum(1)
        return (right / labelled.flatten(1).sum(1).clamp_min(1)).sum()

    # -- metrics
    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        n = self.num_classes
        assert n is not None, "the classes are known once the data is read"
        metrics: dict[str, Any] = {
            "miou": MulticlassJaccardIndex(n, average="macro", ignore_index=IGNORE, validate_args=False),
            "pixel_acc": MulticlassAccuracy(n, average="micro", ignore_index=IGNORE, validate_args=False)}
        if detailed:
            metrics["iou"] = MulticlassJaccardIndex(n, average="none", ignore_index=IGNORE, validate_args=False)
        return Metrics((MetricCollection(metrics).to(device), lambda o, t: (o.argmax(1), t)))

    def val_metrics(self) -> list[str]:
        return ["miou", "pixel_acc"]

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        return {"loss": raw["loss"], "miou": raw["miou"], "pixel_acc": raw["pixel_acc"],
                "iou": dict(zip(names, raw["iou"])), "num_samples": raw["num_samples"], "class_names": names}

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> float:
        """Pixel accuracy of averaged probabilities."""
        labelled = targets != IGNORE
        return float(((predictions.argmax(1) == targets) & labelled).sum() / labelled.sum().clamp_min(1))

    @classmethod
    def weakest(cls, results: Mapping[str, Any]) -> str | None:
        worst = sorted(results.get("iou", {}).items(), key=lambda kv: kv[1])[:3]
        return ("lowest IoU: " + ", ".join(f"{name} {iou:.3f}" for name, iou in worst)) if worst else None

    def check_targets(self, class_names: list[str], train_targets: torch.Tensor | None, where: str) -> None:
        if len(class_names) < 2:
            raise KilnError(f"{where} has {len(class_names)} class; segmentation needs at least two (background "
                            "and one more)")

    def check_message(self) -> str:
        return (f"The segmentation task needs a mask of class indices per sample (an integer tensor (batch, H, W)) "
                f"and outputs (batch, {self.num_classes}, H, W)")

    # -- predictions
    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Per-pixel class probabilities (B, C, H, W)."""
        return outputs.float().softmax(1)

    @classmethod
    def submission_value(cls, r: Prediction, names: list[str], as_index: bool) -> str:
        raise KilnError("--submission fills one label cell per image; "
                        "a segmentation run answers a mask per image: write the masks with --out FOLDER")

    def answers(self, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
        """Each input's share of pixels per predicted class, largest first; its mask (at the model's size) rides
        along for write_predictions."""
        out = []
        for text, p in zip(inputs, predicted):
            mask = p.argmax(0)
            counts = torch.bincount(mask.flatten(), minlength=len(names)).float()
            top = sorted(zip(names, (counts / counts.sum()).tolist()), key=lambda kv: -kv[1])
            out.append(Prediction(text, top[0][0], top[0][1], top, self.name,
                                  mask.to(torch.uint8).cpu().numpy()))
        return out

    @classmethod
    def write_predictions(cls, results: list[Prediction], out: Path, ids: dict[str, int] | None = None) -> str:
        """--out FOLDER (no suffix): one PNG of class indices per input, named by the input's stem, at the input's
        own size (the model saw it stretched to its size: the mask is stretched back, nearest); --out FILE.csv:
        each input's share of pixels per class."""
        if out.suffix:
            return super().write_predictions(results, out)
        from PIL import Image

        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            with Image.open(r.input) as img:
                size = img.size
            Image.fromarray(r.detail).resize(size, Image.Resampling.NEAREST).save(out / f"{Path(r.input).stem}.png")
        return f"wrote {len(results)} masks (PNG, class indices) to {out}"

    @classmethod
    def marks(cls, r: Prediction, size: tuple[int, int]) -> Any:
        """The predicted mask stretched back to the input's size (nearest)."""
        from PIL import Image

        return torch.from_numpy(np.array(Image.fromarray(r.detail).resize(size, Image.Resampling.NEAREST))).long()

    @classmethod
    def csv_header(cls, first: Prediction | None) -> list[str]:
        return ["file", *[name for name, _ in sorted(first.top)]] if first else ["file"]

    @classmethod
    def csv_row(cls, r: Prediction) -> list[str]:
        return [r.input, *[f"{share:.4f}" for _, share in sorted(r.top)]]

    @classmethod
    def prediction_text(cls, r: Prediction) -> str:
        return "  ".join(f"{name} {share:.1%}" for name, share in r.top if share > 0)

    @classmethod
    def prediction_json(cls, r: Prediction) -> dict[str, Any]:
        return {"input": r.input, "pixels": dict(r.top)}

    @classmethod
    def split_keys(cls, targets: torch.Tensor) -> torch.Tensor:
        raise KilnError("segmentation masks are not stratified")

    @classmethod
    def overlay(cls, images: Any, targets: Any, num_classes: int) -> Any:
        """Each image with its mask blended in, a colour per class (background and ignored pixels left bare)."""
        from torchvision.utils import draw_segmentation_masks

        out = []
        for image, mask in zip(torch.as_tensor(images), targets):
            classes = torch.arange(1, num_classes)
            masks = mask.cpu()[None] == classes[:, None, None]
            rgb = image if image.shape[0] == 3 else image.expand(3, -1, -1)
            out.append(draw_segmentation_masks(rgb, masks, alpha=0.45, colors=PALETTE[:num_classes - 1]) if len(
                classes) else rgb)
        return torch.stack(out).numpy()

    image_score = "IoU"

    def image_scores(self, predictions: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], list[Any]]:
        """Each image's IoU averaged over the classes in its mask or its prediction (ignored pixels left out), and
        its predicted mask."""
        masks = predictions.argmax(1).cpu()
        scores = []
        for mask, truth in zip(masks, targets.cpu()):
            valid = truth != IGNORE
            ious = [((mask == c) & (truth == c) & valid).sum() / ((mask == c) | (truth == c)).logical_and(valid).sum()
                    for c in torch.unique(torch.cat([mask[valid], truth[valid]]))]
            scores.append(float(torch.stack(ious).mean()) if ious else 1.0)
        return scores, list(masks)

    @classmethod
    def target_text(cls, y: torch.Tensor, names: list[str]) -> str:
        present = [names[int(c)] for c in torch.unique(y) if int(c) != IGNORE and int(c) < len(names)]
        return ", ".join(present)

    @classmethod
    def split_summary(cls, targets: torch.Tensor, names: list[str]) -> str:
        counts = torch.bincount(targets[targets != IGNORE].flatten().long(), minlength=len(names)).float()
        shares = (counts / counts.sum().clamp_min(1)).tolist()
        return "pixels per class: " + ", ".join(f"{n} {s:.1%}" for n, s in zip(names, shares))

    @classmethod
    def checked_batch(cls, targets: Any, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> torch.Tensor:
        if not isinstance(targets, torch.Tensor) or targets.ndim != 3 or targets.dtype.is_floating_point:
            raise KilnError(f"{shape}; the segmentation task needs a mask of class indices (H, W) per sample")
        return targets.long()


def _soft_dice(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - the mean soft Dice over the classes present, on the labelled pixels."""
    labelled = (targets != IGNORE).unsqueeze(1)
    probs = outputs.float().softmax(1) * labelled
    onehot = F.one_hot(targets.clamp(0, outputs.shape[1] - 1), outputs.shape[1]).permute(0, 3, 1, 2) * labelled
    inter, total = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (total + 1)
    return 1 - dice[present].mean() if present.any() else outputs.sum() * 0
