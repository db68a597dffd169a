"""Object detection: boxes and their classes per image. Targets are a list (one per image) of {"boxes": (n, 4) x1 y1
x2 y2 in pixels, "labels": (n,) 1..K} — label 0 is the background of torchvision's detectors. The model is called as
they are (Task.outputs): with the targets in training, when it returns its losses; without them otherwise, when it
returns its detections ({"boxes", "scores", "labels"} per image)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from kiln.config import DetectionTaskConfig
from kiln.core.errors import KilnError
from kiln.tasks.base import Metrics, Prediction, Task


class DetectionTask(Task):
    """The detector's own training losses, summed; mAP@[.5:.95] (`map`), mAP@.5 (`map_50`) and, in tests, each
    class's AP — torchmetrics' MeanAveragePrecision (pycocotools), its states gathered over the processes."""

    # ONNX through DetectionGraph; torch.export and TorchScript's tracer cannot follow the post-processing's shapes
    export_formats = ("onnx", "safetensors")
    exported = ("score_threshold", "max_detections", "category_ids")  # what predictions from the export need

    name = "detection"
    train_metric = None  # the loss is the detector's own; no running metric without detections
    eval_loss = False  # in evaluation a detector returns detections: val/loss is logged as 0, not shown
    headline = "map"
    summary_metrics = ("map", "map_50", "map_75")
    label_is_the_answer = False  # the label summarises the image's marks
    noun = "classes"
    class_per_sample = False
    sources = "COCO or YOLO files (data.name: coco_detection, yolo_detection) or your own Dataset"
    file_hint = "boxes"
    output_doc = ("one image's detections after the detector's own NMS: boxes (n, 4) x1, y1, x2, y2 in the input's "
                  "pixels; scores (n,); labels (n,) 1..K, 0 being the background (kiln drops those below "
                  "score_threshold and keeps max_detections)")

    def __init__(self, cfg: DetectionTaskConfig, num_classes: int | None):
        super().__init__(cfg, num_classes)
        self.cfg: DetectionTaskConfig = cfg

    # -- how the model is called
    def outputs(self, model: Any, inputs: Any, targets: Any = None) -> Any:
        images = list(inputs)
        if model.training and targets is not None:
            return model(images, targets)  # {loss name: scalar}
        return [{**self._kept(d), "frame": torch.tensor(image.shape[-2:])} for d, image in zip(model(images), images)]

    def _kept(self, detections: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keep = (detections["scores"] >= self.cfg.score_threshold).nonzero().flatten()[:self.cfg.max_detections]
        return {k: v[keep] for k, v in detections.items()}

    def logits(self, outputs: Any) -> Any:
        return outputs

    # -- the exported graph: one image in, its detections out
    def export_graph(self, model: torch.nn.Module) -> torch.nn.Module:
        return DetectionGraph(model)

    def from_graph(self, answers: list[tuple[torch.Tensor, ...]], inputs: torch.Tensor) -> Any:
        """The graph's raw detections of each image, kept as `outputs` keeps a model's."""
        return [{**self._kept({"boxes": boxes, "scores": scores, "labels": labels}),
                 "frame": torch.tensor(image.shape[-2:])} for (boxes, scores, labels), image in zip(answers, inputs)]

    # -- training
    def task_objective(self, outputs: Any, targets: Any) -> torch.Tensor:
        if not isinstance(outputs, dict):
            raise KilnError("a detector returns its losses in training mode only (given its targets); this model "
                            f"returned {type(outputs).__name__}")
        return torch.stack([v.float() for v in outputs.values()]).sum()

    def loss_sum(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The training loss times the batch's images; in evaluation detectors return detections, not losses: 0
        (val/loss is not measured — best.pt follows val/map)."""
        if isinstance(outputs, dict):
            return self.task_objective(outputs, targets) * len(targets)
        return torch.zeros((), device=_device(outputs))

    # -- metrics
    def metrics(self, device: torch.device, detailed: bool = False) -> Metrics:
        return GatheredMap(detailed)

    def val_metrics(self) -> list[str]:
        return ["map", "map_50"]

    def test_results(self, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
        per_class = raw.get("map_per_class")
        classes = raw.get("classes")
        if per_class is not None and not isinstance(per_class, list):
            per_class, classes = [per_class], [classes]
        ap = {names[int(c)]: v for c, v in zip(classes or [], per_class or []) if 0 <= int(c) < len(names)}
        return {"map": raw["map"], "map_50": raw["map_50"], "map_75": raw["map_75"], "ap": ap,
                "num_samples": raw["num_samples"], "class_names": names}

    def check_targets(self, class_names: list[str], train_targets: Any, where: str) -> None:
        if len(class_names) < 2:
            raise KilnError(f"{where} has no category; detection needs at least one besides the background")

    def check_message(self) -> str:
        return ("The detection task needs a list of {'boxes': (n, 4) x1 y1 x2 y2, 'labels': (n,) 1..K} per batch and "
                "a detector called as torchvision's are")

    # -- targets: kept as a list of dicts (torch's default collate would try to stack boxes of different counts)
    @classmethod
    def collate_targets(cls, targets: list[Any]) -> Any:
        return list(targets)

    @classmethod
    def checked_batch(cls, targets: Any, num_classes: int, shape: str, sample: Callable[[int], int],
                      split: str) -> Any:
        if not isinstance(targets, list) or not all(isinstance(t, dict) and {"boxes", "labels"} <= set(t)
                                                    for t in targets):
            raise KilnError(f"{shape}; the detection task needs a {{'boxes', 'labels'}} dict per image")
        return targets

    @classmethod
    def split_keys(cls, targets: Any) -> torch.Tensor:
        raise KilnError("detection targets are not stratified")

    @classmethod
    def overlay(cls, images: Any, targets: Any, num_classes: int) -> Any:
        """Each image with its boxes drawn."""
        from torchvision.utils import draw_bounding_boxes

        out = []
        for image, target in zip(torch.as_tensor(images), targets):
            rgb = image if image.shape[0] == 3 else image.expand(3, -1, -1)
            boxes = target["boxes"].cpu()
            out.append(draw_bounding_boxes(rgb, boxes, colors="yellow", width=1) if len(boxes) else rgb)
        return torch.stack(out).numpy()

    image_score = "F1"

    def image_scores(self, predictions: Any, targets: Any) -> tuple[list[float], list[Any]]:
        """Each image's F1 of its boxes scored at least 0.5 against its true ones (a match: the same class and IoU
        at least 0.5, best scores first), and those boxes."""
        from torchvision.ops import box_iou

        scores, marks = [], []
        for found, truth in zip(predictions, targets):
            keep = found["scores"].cpu() >= 0.5
            boxes, labels = found["boxes"].cpu()[keep], found["labels"].cpu()[keep]
            true_boxes, true_labels = truth["boxes"].cpu(), truth["labels"].cpu()
            iou = box_iou(boxes, true_boxes) * (labels[:, None] == true_labels[None, :]) if len(boxes) and len(
                true_boxes) else torch.zeros(len(boxes), len(true_boxes))
            matched, used = 0, set()
            for row in iou:  # boxes in score order, each to its best unused true box
                free = [j for j in row.argsort(descending=True).tolist() if j not in used and row[j] >= 0.5]
                if free:
                    used.add(free[0])
                    matched += 1
            total = len(boxes) + len(true_boxes)
            scores.append(2 * matched / total if total else 1.0)
            marks.append({"boxes": boxes, "labels": labels})
        return scores, marks

    @classmethod
    def target_text(cls, y: Any, names: list[str]) -> str:
        labels = y["labels"].tolist() if isinstance(y, dict) else []
        return ", ".join(names[c] for c in labels if 0 <= c < len(names)) or "no boxes"

    @classmethod
    def split_summary(cls, targets: Any, names: list[str]) -> str:
        return f"{sum(len(t['labels']) for t in targets)} boxes"

    # -- predictions
    def predictions(self, outputs: Any) -> Any:
        return outputs

    def average(self, outputs: list[Any], weights: list[float]) -> Any:
        raise KilnError("detections of several models or views cannot be averaged box by box (that needs box "
                        "fusion, which kiln does not do): predict and test a detection run alone, without --tta")

    @classmethod
    def submission_value(cls, r: Prediction, names: list[str], as_index: bool) -> str:
        raise KilnError("--submission fills one label cell per image; "
                        "a detection run answers boxes per image: write them with --out FILE.json (COCO results) or FILE.csv")

    def answers(self, inputs: list[str], predicted: Any, names: list[str], top_k: int) -> list[Prediction]:
        """Each input's detections, best score first: the classes found, and (in `detail`) every box in the input's
        own pixels with its class, the dataset's category id and its score."""
        from PIL import Image

        ids = self.cfg.category_ids or list(range(len(names)))
        out = []
        for text, d in zip(inputs, predicted):
            with Image.open(text) as img:  # the model saw the image stretched to its frame: boxes scale back
                width, height = img.size
            frame_h, frame_w = (int(v) for v in d["frame"])
            scale = torch.tensor([width / frame_w, height / frame_h] * 2)
            boxes = []
            for box, label, score in zip((d["boxes"].cpu() * scale).tolist(), d["labels"].tolist(), d["scores"].tolist()):
                x1, y1, x2, y2 = box
                boxes.append({"category": names[label], "category_id": ids[label], "score": round(float(score), 5),
                              "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]})
            found = [(b["category"], b["score"]) for b in boxes]
            label = ", ".join(dict.fromkeys(n for n, _ in found)) or "nothing"
            out.append(Prediction(text, label, found[0][1] if found else None, found, self.name, boxes))
        return out

    @classmethod
    def marks(cls, r: Prediction, size: tuple[int, int]) -> Any:
        """The predicted boxes, in the input's pixels (x1, y1, x2, y2)."""
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (b["bbox"] for b in r.detail or [])]
        return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)}

    @classmethod
    def prediction_text(cls, r: Prediction) -> str:
        return "  ".join(f"{b['category']} {b['score']:.3f} at {b['bbox']}" for b in r.detail or []) or "nothing"

    @classmethod
    def prediction_json(cls, r: Prediction) -> dict[str, Any]:
        return {"input": r.input, "detections": r.detail or []}

    @classmethod
    def write_predictions(cls, results: list[Prediction], out: Path, ids: dict[str, int] | None = None) -> str:
        """--out FILE.json: COCO results — one record per box with file_name, image_id (an image the run's COCO
        files list), category_id (the dataset's), bbox [x, y, w, h] in the input's pixels and score; --out FILE.csv:
        one row per box."""
        from kiln.core.state import atomic_write

        ids = ids or {}
        records = [{"file_name": Path(r.input).name, **_image_id(ids, r.input), **box}
                   for r in results for box in r.detail or []]
        if out.suffix.lower() == ".json":
            keys = ("file_name", "image_id", "category_id", "bbox", "score")
            text = json.dumps([{k: rec[k] for k in keys if k in rec} for rec in records])
        else:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["file", "category", "category_id", "score", "x", "y", "w", "h"])
            writer.writerows([r["file_name"], r["category"], r["category_id"], r["score"], *r["bbox"]] for r in records)
            text = buffer.getvalue()
        atomic_write(out, lambda f: f.write(text.encode("utf-8")))
        return f"wrote {len(records)} boxes of {len(results)} images to {out}"


class DetectionGraph(torch.nn.Module):
    """A torchvision detector as an exported graph: one image (1, C, H, W) in, its detections after the detector's
    own post-processing out. One image at a time — what ONNX's per-image NMS and the boxes' data-dependent count
    allow; the graph is traced (torch.onnx's TorchScript-based exporter), which follows those shapes where
    torch.export cannot."""

    output_names = ("boxes", "scores", "labels")
    batch_size = 1
    traced = True
    tolerances: ClassVar[dict[str, float]] = {"boxes": 0.01}  # pixels: a hundredth of one (scores and labels: kiln export's 1e-4)
    shape_hint = ("a box more or less: boxes whose scores (nearly) tie, as an untrained detector's do, may be kept "
                  "otherwise by ONNX's NMS; export a trained model")
    MARGIN = 1e-3  # boxes scored within this of the cut may fall either side of it: not compared

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        # where the detector cuts its answers: torchvision's keep these on the model or on its box head
        heads = getattr(model, "roi_heads", model)
        self.score_thresh = float(getattr(heads, "score_thresh", 0.0))
        self.most = getattr(heads, "detections_per_img", None)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.model([images[0]])[0]
        return found["boxes"], found["scores"], found["labels"]

    def differences(self, expected: tuple[np.ndarray, ...], got: tuple[np.ndarray, ...]) -> dict[str, float]:
        """How far one image's exported detections are from the model's, as sets: boxes whose scores nearly tie
        come out of NMS and the top-k in either order, so each box of either side is paired with the other side's
        box of its class nearest to it. The largest box and score differences of the pairs; infinite for all
        three where a box scored clearly above the cut (the score threshold or the most detections) has no
        partner of its class."""
        worst = {"boxes": 0.0, "scores": 0.0, "labels": 0.0}
        full = [float(side[1].min()) for side in (expected, got) if self.most and len(side[1]) >= self.most]
        floor = max([self.score_thresh, *full]) + self.MARGIN
        for mine, theirs in ((expected, got), (got, expected)):
            for box, score, label in zip(*mine):
                if score < floor:
                    continue
                same = theirs[2] == label
                if not same.any():
                    return dict.fromkeys(worst, math.inf)
                distance = np.abs(theirs[0][same].astype(np.float64) - box).max(1)
                nearest = int(distance.argmin())
                worst["boxes"] = max(worst["boxes"], float(distance[nearest]))
                worst["scores"] = max(worst["scores"], abs(float(theirs[1][same][nearest]) - float(score)))
        return worst


def _image_id(ids: dict[str, int], path: str) -> dict[str, int]:
    """The dataset's id of the image at `path`: by its path, else by its file name where that names one image."""
    found = ids.get(str(Path(path).resolve()), ids.get(f"name:{Path(path).name}"))
    return {} if found is None else {"image_id": found}


class GatheredMap(Metrics):
    """mAP (torchmetrics' MeanAveragePrecision, pycocotools' evaluation) over every rank's images. torchmetrics'
    own sync gathers its per-image list states one tensor at a time, which needs the same number of images on
    every rank; kiln's shards of a split may differ by one (no image is scored twice), so each rank's boxes are
    gathered whole here, back in the split's order, and every rank computes the mAP one process would."""

    def __init__(self, detailed: bool):
        super().__init__()
        self.detailed = detailed
        self.predicted: list[dict[str, torch.Tensor]] = []
        self.truth: list[dict[str, torch.Tensor]] = []

    def update(self, outputs: Any, targets: Any) -> None:
        self.predicted += [{k: v.detach().cpu() for k, v in d.items()} for d in _boxes(outputs)]
        self.truth += [{k: v.detach().cpu() for k, v in t.items()} for t in targets]

    def compute(self) -> dict[str, torch.Tensor]:
        from torchmetrics.detection import MeanAveragePrecision

        from kiln.core import dist

        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=self.detailed,
                                      backend="pycocotools", sync_on_compute=False)
        pairs = dist.gather_samples(list(zip(self.predicted, self.truth)))  # in the split's order: mAP breaks ties by it
        if pairs:
            metric.update([p for p, _ in pairs], [t for _, t in pairs])
        return metric.compute()


def _boxes(outputs: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Detections as the mAP metric takes them (without the frame size that predictions carry)."""
    return [{k: d[k] for k in ("boxes", "scores", "labels")} for d in outputs]


def _device(outputs: Any) -> torch.device:
    for d in outputs:
        for v in d.values():
            return v.device
    return torch.device("cpu")
