"""Images after training: image files, folders, globs and CSVs of paths decoded exactly as evaluation batches them;
the export's input description; images shown; pooled pixels for a classical baseline."""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kiln.core.errors import KilnError
from kiln.core.formats import ExportInput, ExportMeta
from kiln.data.inputs.base import Inputs, PredictQuery, Shown

if TYPE_CHECKING:
    from kiln.data.info import DataInfo

log = logging.getLogger("kiln")
CHUNK = 256  # images decoded and predicted at a time
BASELINE_SIDE = 16  # the baseline's pixels are average-pooled to at most this many per side


@dataclass(frozen=True)
class Pixels:
    """What turns image files into a model's inputs (a DataInfo has the same fields; an export's metadata gives
    them too)."""

    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stored_size: tuple[int, int] = (0, 0)
    crop: bool = True


class ImageInputs(Inputs):
    kind = "image"
    export_layouts = ("image",)
    baseline_description = f"pixels pooled to at most {BASELINE_SIDE}x{BASELINE_SIDE}, standardised"

    def model_args(self, info) -> dict[str, Any]:
        return {"in_channels": info.in_channels, "image_size": info.image_size, "num_classes": info.num_classes}

    def predict_batches(self, query: PredictQuery) -> Iterator[tuple[list[str], Any]]:
        if query.file:
            raise KilnError("--file is for text runs; pass image files, folders, globs or a CSV of paths")
        data = query.cfg.data
        configured = data.path_column if data.path_column != "path" else None  # the default: find it
        paths = image_inputs(query.inputs, query.path_column or configured)
        per_image = eval_transforms(query.cfg, query.info)
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start:start + CHUNK]
            yield chunk, image_batch([Path(p) for p in chunk], query.info, per_image).to(query.device)

    # -- export
    def export_layout(self, cfg) -> str:
        return "image"

    def export_input(self, info, cfg, vocab) -> ExportInput:
        return {"shape": ["batch", info.in_channels, *info.image_size], "dtype": "float32",
                "pixels": "scaled to [0, 1], then (x - mean) / std", "mean": info.mean, "std": info.std,
                "stored_size": info.stored_size, "crop": info.crop}

    def stand_in(self, info, layout: str, size: int) -> Any:
        g = torch.Generator().manual_seed(0)
        return torch.randn(size, info.in_channels, *info.image_size, generator=g)

    def exported_batch(self, meta: ExportMeta, path: Path, inputs: Sequence[str],
                       path_column: str | None) -> tuple[list[str], tuple[np.ndarray, ...]]:
        spec = meta["input"]
        shape, stored = spec["shape"], spec.get("stored_size") or [0, 0]
        pixels = Pixels(int(shape[1]), (int(shape[2]), int(shape[3])), _per_channel(spec["mean"]),
                        _per_channel(spec["std"]), (int(stored[0]), int(stored[1])), bool(spec.get("crop", True)))
        paths = image_inputs(inputs, path_column)
        return paths, (image_batch([Path(p) for p in paths], pixels).numpy(),)

    # -- showing, and a classical baseline
    def show(self, cfg, batches, indices: torch.Tensor) -> Shown:
        from kiln.data.images import stored_images

        return Shown(images=stored_images(batches, indices).numpy().astype(np.uint8))

    def shown_batch(self, x: Any, info) -> np.ndarray | None:
        if not isinstance(x, torch.Tensor):
            return None
        mean = torch.tensor(info.mean).reshape(1, -1, 1, 1)
        std = torch.tensor(info.std).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x.float() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8).numpy())

    def one(self, value: str, info, cfg, vocab) -> Any:
        return image_batch([Path(value)], info)

    def baseline_features(self, train, evaluation) -> tuple[Any, np.ndarray, Any, np.ndarray]:
        from sklearn.preprocessing import StandardScaler

        x_train, y_train = _pooled_pixels(train)
        x_eval, y_eval = _pooled_pixels(evaluation)
        scaler = StandardScaler().fit(x_train)
        return scaler.transform(x_train), y_train, scaler.transform(x_eval), y_eval


def _pooled_pixels(batches) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for x, y in batches.epoch(0):
        x = x.float()
        side = (min(BASELINE_SIDE, x.shape[2]), min(BASELINE_SIDE, x.shape[3]))
        feats.append(torch.nn.functional.adaptive_avg_pool2d(x, side).flatten(1).cpu())
        labels.append(y.cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def _per_channel(value) -> tuple[float, ...]:
    return tuple(value) if isinstance(value, list) else (float(value),)  # older exports: one value for all


def image_inputs(inputs: Sequence[str], path_column: str | None = None) -> list[str]:
    """Image files from what a user passes: files, folders (every image in them, recursively), glob patterns,
    and CSV files of paths (column `path_column`, else `path`, else the one column that names image files;
    relative to the CSV)."""
    from kiln.data.image_files import IMAGE_EXTENSIONS

    paths: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise KilnError(f"no images in {p} (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
            paths += found
        elif p.suffix.lower() == ".csv":
            paths += _csv_paths(p, path_column)
        elif any(ch in item for ch in "*?[") and not p.exists():
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise KilnError(f"no files match {item!r}")
            paths += matched
        else:
            paths.append(item)
    if not paths:
        raise KilnError("nothing to predict: pass image files, folders, glob patterns or a CSV of paths")
    return paths


def _csv_paths(path: Path, column: str | None) -> list[str]:
    import csv

    if not path.is_file():
        raise KilnError(f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        header = list(rows[0]) if rows else []
    column = column or _path_column(path, header, rows)
    if column not in header:
        raise KilnError(f"{path} has no {column!r} column of image paths (its header: {', '.join(header)}); "
                        "name the column with --path-column")
    return [str(path.parent / row[column].strip()) for row in rows if (row.get(column) or "").strip()]


def _path_column(path: Path, header: list[str], rows: list[dict[str, str]]) -> str:
    """The column of image paths when none is named: `path`, else the one column whose every value is an image
    file name (file, filename, image, ...)."""
    from kiln.data.image_files import IMAGE_EXTENSIONS

    if "path" in header or not rows:
        return "path"
    named = [c for c in header if all(Path((row.get(c) or "").strip()).suffix.lower() in IMAGE_EXTENSIONS
                                      for row in rows)]
    if len(named) != 1:
        found = f"{' and '.join(named)} all name image files" if named else "no column names image files"
        raise KilnError(f"{path} has no 'path' column and {found} (its header: {', '.join(header)}); name the "
                        "column of image paths with --path-column")
    log.info("%s: image paths from its column %r", path, named[0])
    return named[0]


def eval_transforms(cfg, info: DataInfo | Pixels):
    """The run's data.transforms.eval, if it has one (image folders/CSVs): predictions see what evaluation saw."""
    if not cfg.data.transforms.eval:
        return None
    from kiln.data.config_transforms import PerImage, build_pipeline

    return PerImage(build_pipeline(cfg.data.transforms.eval, "data.transforms.eval"), cfg.seed, info.image_size,
                    "data.transforms.eval")


def image_batch(paths: list[Path], info: DataInfo | Pixels, per_image=None) -> torch.Tensor:
    """Image files -> (B, C, H, W) exactly as evaluation batches: decoded like the training images (mode, EXIF,
    resized to cover the stored size, centre cut), centre-cropped to the model's size, normalised."""
    from kiln.data.image_store import BadImage, decode
    from kiln.data.transforms import BatchTransform

    stored = info.stored_size if info.stored_size[0] else info.image_size
    images = []
    for path in paths:
        if not path.is_file():
            raise KilnError(f"image not found: {path}")
        try:
            images.append(torch.from_numpy(decode(path, info.in_channels, stored, info.crop)))
        except BadImage as e:
            raise KilnError(f"cannot read image {path}: {e.error}") from None
    batch = torch.stack(images)
    if per_image is not None:
        batch = per_image(batch, 0, 0)
    return BatchTransform(info.mean, info.std, size=info.image_size)(batch)
