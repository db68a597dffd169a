"""Object detection data: boxes per image, from COCO files or YOLO label files.

    coco_detection   data.root/annotations/{train,val,test}.json (COCO: images, annotations with bbox [x, y, w, h],
                     categories), file_name relative to data.root/images/
    yolo_detection   data.root/{train,val,test}/images/* with labels/<stem>.txt lines `class cx cy w h` (normalised
                     to the image), data.root/classes.txt naming the classes in index order

val is optional (then data.val_split of train). Images without boxes are allowed. Images are read once into memory
resized to data.image_size (square: boxes scale with the image) and checked; a sample is (image in [0, 1] (C, S, S),
{"boxes": (n, 4) x1 y1 x2 y2 in the resized image's pixels, "labels": (n,) 1..K}) — label 0 is the detectors'
background, so the class names are background then the dataset's categories. Training flips each image with its
boxes (torchvision transforms v2: tv_tensors.BoundingBoxes), drawn per batch from kiln's seeded RNG."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.assemble import Found, Pool, assemble, plan_splits, pools_needed
from kiln.data.info import Data, DataInfo, DataRequest
from kiln.data.joint import joint_augment, refuse_pixel_only
from kiln.data.loaders import Batches

log = logging.getLogger("kiln")
SPLITS = ("train", "val", "test")
BACKGROUND = "background"


@dataclass
class Annotated:
    """One image and its boxes as the files give them (pixels of the original image, x1 y1 x2 y2)."""

    path: Path
    boxes: list[list[float]]
    labels: list[int]  # 1..K
    where: str  # the file (and line) the boxes come from, for messages


def build_detection_data(cfg: DataConfig, request: DataRequest, layout: str, holds: str) -> Data:
    """The splits found under data.root (`layout`: coco | yolo), read, checked, split."""
    if cfg.root is None:
        raise KilnError(f"data.name={cfg.name} needs data.root: the folder holding {holds}")
    from kiln.data.segmentation import check_task_reads

    check_task_reads(request.task, "boxes per image", "detection")
    refuse_pixel_only(cfg, "boxes")
    root = Path(cfg.root)
    read = _coco_split if layout == "coco" else _yolo_split
    categories = _coco_categories(root) if layout == "coco" else _yolo_classes(root)
    found = {split: read(root, split, categories, cfg.on_bad_row) for split in SPLITS
             if _has_split(root, split, layout)}
    if "train" not in found:
        raise KilnError(f"{root} has no training split; a {cfg.name} folder holds {holds}")
    names = [BACKGROUND, *categories.values()]
    size = _size(cfg)
    channels = cfg.channels or 3
    needed = pools_needed(tuple(found), request.splits, cfg)
    scenes = {split: read_scenes(found[split], size, channels, cfg.on_bad_row) for split in needed}
    info = DataInfo(cfg.name, "image", len(names), names, in_channels=channels, image_size=size,
                    mean=(0.0,) * channels, std=(1.0,) * channels, stored_size=size, crop=False,
                    output_ids=(-1, *categories))  # the background has no id of the dataset's
    plan = plan_splits({split: Pool(len(s)) for split, s in scenes.items()}, cfg, request.overfit_batches,
                       request.splits)
    derived = {k: v for k, v in {"image_size": list(size), "channels": channels, "class_names": names}.items()
               if getattr(cfg, k) is None}
    return assemble(BoxedImages(info, scenes, cfg, request), plan, request, Found(derived=derived))


def _has_split(root: Path, split: str, layout: str) -> bool:
    return (root / "annotations" / f"{split}.json").is_file() if layout == "coco" else (root / split / "images").is_dir()


# --------------------------------------------------------------------------- COCO

def _coco_categories(root: Path) -> dict[int, str]:
    """The dataset's category id -> name, from the training file (ids need not be contiguous: kiln numbers them
    1..K in id order)."""
    data = _read_json(root / "annotations" / "train.json")
    cats = data.get("categories") or []
    if not cats:
        raise KilnError(f"{root / 'annotations' / 'train.json'} lists no categories")
    return {int(c["id"]): str(c["name"]) for c in sorted(cats, key=lambda c: int(c["id"]))}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise KilnError(f"cannot read {path} as COCO JSON: {e}") from None


def coco_image_ids(root: Path) -> dict[str, int]:
    """Every image the COCO files under `root` list: its resolved path -> its id, and "name:<file name>" -> its
    id where no other listed image has that name (a copy of the images elsewhere is still named by its id)."""
    out: dict[str, int] = {}
    names: dict[str, list[int]] = {}
    for path in sorted((Path(root) / "annotations").glob("*.json")):
        try:
            images = json.loads(path.read_text()).get("images", [])
        except (OSError, ValueError, AttributeError):
            continue
        for im in images:
            if isinstance(im, dict) and "file_name" in im and "id" in im:
                out[str((Path(root) / "images" / im["file_name"]).resolve())] = int(im["id"])
                names.setdefault(Path(im["file_name"]).name, []).append(int(im["id"]))
    out.update({f"name:{name}": ids[0] for name, ids in names.items() if len(set(ids)) == 1})
    return out


def _coco_split(root: Path, split: str, categories: dict[int, str], on_bad_row: str) -> list[Annotated]:
    path = root / "annotations" / f"{split}.json"
    data = _read_json(path)
    index = {cat: i + 1 for i, cat in enumerate(categories)}
    images = {int(im["id"]): im for im in data.get("images", [])}
    out = {im_id: Annotated(root / "images" / im["file_name"], [], [], f"{path} (image {im_id})")
           for im_id, im in images.items()}
    bad: list[str] = []
    for ann in data.get("annotations", []):
        problem = _coco_problem(ann, images, index)
        if problem:
            bad.append(f"{path}: annotation {ann.get('id')}: {problem}")
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        out[int(ann["image_id"])].boxes.append([x, y, x + w, y + h])
        out[int(ann["image_id"])].labels.append(index[int(ann["category_id"])])
    _refuse_or_count(bad, on_bad_row, "annotation(s)")
    return list(out.values())


def _coco_problem(ann: dict[str, Any], images: dict[int, dict], index: dict[int, int]) -> str:
    if int(ann.get("image_id", -1)) not in images:
        return f"names image {ann.get('image_id')}, which the file does not list"
    if int(ann.get("category_id", -1)) not in index:
        return f"names category {ann.get('category_id')}, which the categories do not list"
    x, y, w, h = (float(v) for v in ann.get("bbox", [0, 0, 0, 0]))
    im = images[int(ann["image_id"])]
    if w <= 0 or h <= 0:
        return f"has a box of zero size {ann.get('bbox')}"
    if x < 0 or y < 0 or x + w > float(im["width"]) + 0.5 or y + h > float(im["height"]) + 0.5:
        return f"has a box {ann.get('bbox')} outside its {im['width']}x{im['height']} image"
    return ""


# --------------------------------------------------------------------------- YOLO

def _yolo_classes(root: Path) -> dict[int, str]:
    listed = root / "classes.txt"
    if not listed.is_file():
        raise KilnError(f"{root} has no classes.txt; a YOLO folder names its classes there, one per line in index "
                        "order")
    from kiln.data.image_files import read_class_map

    return dict(enumerate(read_class_map(listed)))


def _yolo_split(root: Path, split: str, categories: dict[int, str], on_bad_row: str) -> list[Annotated]:
    from PIL import Image

    from kiln.data.image_files import IMAGE_EXTENSIONS

    out, bad = [], []
    for image in sorted(p for p in (root / split / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        labels = root / split / "labels" / f"{image.stem}.txt"
        item = Annotated(image, [], [], str(labels))
        if labels.is_file():
            with Image.open(image) as img:
                width, height = img.size
            for n, line in enumerate(labels.read_text().splitlines(), 1):
                problem = _yolo_line(line, categories, width, height, item)
                if problem:
                    bad.append(f"{labels}, line {n}: {problem}")
        out.append(item)
    _refuse_or_count(bad, on_bad_row, "label line(s)")
    return out


def _yolo_line(line: str, categories: dict[int, str], width: int, height: int, item: Annotated) -> str:
    fields = line.split()
    if not fields:
        return ""
    if len(fields) != 5:
        return f"{len(fields)} fields; a YOLO line is `class cx cy w h` (5 fields)"
    try:
        cls, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:])
    except ValueError:
        return f"not numbers: {line.strip()!r}"
    if cls not in categories:
        return f"class {cls} is not in classes.txt (0..{len(categories) - 1})"
    if w <= 0 or h <= 0:
        return "a box of zero size"
    if cx - w / 2 < -1e-3 or cy - h / 2 < -1e-3 or cx + w / 2 > 1 + 1e-3 or cy + h / 2 > 1 + 1e-3:
        return "a box outside the image (coordinates are fractions of the image, 0..1)"
    item.boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
    item.labels.append(cls + 1)
    return ""


def _refuse_or_count(bad: list[str], on_bad_row: str, what: str) -> None:
    if not bad:
        return
    if on_bad_row == "error":
        raise KilnError(f"{bad[0]}. Fix it, or set data.on_bad_row=skip to leave such boxes out")
    log.warning("skipped %d bad %s (first: %s)", len(bad), what, bad[0])


# --------------------------------------------------------------------------- samples

@dataclass
class Scenes:
    """One split's images (uint8, resized) with their boxes in the resized image's pixels."""

    images: torch.Tensor  # (N, C, S, S)
    boxes: list[torch.Tensor]  # (n_i, 4) float
    labels: list[torch.Tensor]  # (n_i,) int64

    def __len__(self) -> int:
        return len(self.boxes)


def read_scenes(items: list[Annotated], size: tuple[int, int], channels: int, on_bad_row: str) -> Scenes:
    from PIL import Image

    images, boxes, labels, bad = [], [], [], []
    for item in items:
        try:
            with Image.open(item.path) as img:
                width, height = img.size
                img = img.convert("RGB" if channels == 3 else "L").resize((size[1], size[0]),
                                                                          Image.Resampling.BILINEAR)
                array = np.array(img, dtype=np.uint8)
        except OSError as e:
            bad.append(f"cannot read image {item.path} ({item.where}): {e}")
            continue
        scale = torch.tensor([size[1] / width, size[0] / height] * 2)
        images.append(array.transpose(2, 0, 1) if array.ndim == 3 else array[None])
        boxes.append(torch.tensor(item.boxes, dtype=torch.float32).reshape(-1, 4) * scale)
        labels.append(torch.tensor(item.labels, dtype=torch.int64))
    _refuse_or_count(bad, on_bad_row, "image(s)")
    if not images:
        raise KilnError(f"no readable image among {len(items)} in {items[0].where if items else 'the split'}")
    return Scenes(torch.from_numpy(np.stack(images)), boxes, labels)


def _size(cfg: DataConfig) -> tuple[int, int]:
    if cfg.image_size is None:
        return (320, 320)
    return (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else tuple(cfg.image_size)  # type: ignore[return-value]


@dataclass
class BoxedImages:
    """The splits as a Source: each batch's images and boxes flipped together (training), through kiln's batch
    plan (seeded per batch: exact resume); targets are a list of {"boxes", "labels"} per batch."""

    info: DataInfo
    scenes: dict[str, Scenes]
    cfg: DataConfig
    request: DataRequest
    loader: str = "dataloader"

    def batches(self, split: str, pool: str, idx: torch.Tensor) -> Batches:
        from kiln.data.user import planned_batches

        augment = joint_augment(self.cfg, self.info.image_size, boxes=True) if split == "train" else None
        samples = DetectionSamples(self.scenes[pool], idx, augment)
        return planned_batches(samples, split, len(idx), self.info.num_classes, self.cfg, self.request)


class DetectionSamples(Dataset):
    """(image in [0, 1] (C, S, S), {"boxes": (n, 4), "labels": (n,)}) of the samples `idx` of a split."""

    def __init__(self, scenes: Scenes, idx: torch.Tensor, augment: Any = None):
        self.scenes, self.idx, self.augment = scenes, idx, augment

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torchvision import tv_tensors

        j = int(self.idx[i])
        image = tv_tensors.Image(self.scenes.images[j])
        target = {"boxes": tv_tensors.BoundingBoxes(self.scenes.boxes[j], format="XYXY",
                                                    canvas_size=tuple(image.shape[-2:])),
                  "labels": self.scenes.labels[j].clone()}
        if self.augment is not None:  # boxes moved with the pixels; those cut to nothing dropped with their labels
            image, target = self.augment(image, target)
        return (image.as_subclass(torch.Tensor).float() / 255,
                {"boxes": target["boxes"].as_subclass(torch.Tensor).float(), "labels": target["labels"]})
