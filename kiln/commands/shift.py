"""`kiln shift`: adversarial validation — can a classifier tell the training images from another folder's (a
competition's unlabelled test images)?

A logistic regression is cross-validated on features of both sets (the run's own model's features before its head
when a run is given; a small picture and colour histogram of each image for a config), so every image gets a
probability of being from the other folder that no model saw it for. Their ROC AUC says how far apart the sets are:
about 0.5, a model cannot tell them apart and a validation score carries over to the other folder; near 1, the
other folder is of another kind and validation will overstate the score there. The training images that look most
like the other folder's make a validation split that resembles it (`--val-like`, for data.val_files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.config import Config
from kiln.core.errors import KilnError
from kiln.runs import RunDir

log = logging.getLogger("kiln")
FEATURE_SIZE = 16  # the side of the small picture a config's images are compared by
HISTOGRAM_BINS = 16
FOLDS = 5


@dataclass
class Shift:
    """The result: the ROC AUC, and each image's out-of-fold probability of being from the other folder."""

    auc: float
    train: list[Path]
    other: list[Path]
    p_train: np.ndarray  # P(other folder) of each training image
    p_other: np.ndarray  # P(other folder) of each of the other folder's images
    root: Path | None = None  # the config's data.root: what --val-like's paths are written relative to

    @property
    def verdict(self) -> str:
        if self.auc < 0.6:
            return "the sets look alike: a validation score should carry over to the other folder"
        if self.auc < 0.8:
            return "some shift: expect the other folder's score to differ from validation"
        return ("a strong shift: validation will overstate the score on the other folder; validate on the training "
                "images most like it (kiln shift ... --val-like N, then data.val_files)")

    def foreign(self, k: int) -> dict[str, list[tuple[str, float]]]:
        """The k images of each side a classifier is surest are from their own side."""
        train = np.argsort(self.p_train)[:k]
        other = np.argsort(-self.p_other)[:k]
        return {"train": [(str(self.train[i]), float(self.p_train[i])) for i in train],
                "other": [(str(self.other[i]), float(self.p_other[i])) for i in other]}

    def most_like_other(self, count: int) -> list[Path]:
        """The `count` training images that look most like the other folder's."""
        return [self.train[i] for i in np.argsort(-self.p_train, kind="stable")[:count]]

    def as_json(self, k: int) -> dict[str, Any]:
        return {"auc": self.auc, "verdict": self.verdict, "train_images": len(self.train),
                "other_images": len(self.other), "most_foreign": self.foreign(k)}


def measure_shift(source: Path, other: Path, overrides: list[str] | tuple[str, ...] = (), seed: int = 0) -> Shift:
    """The adversarial validation of `source` (a run folder, or a config) against the images under `other`."""
    from kiln.data.inputs.image import image_inputs
    from kiln.data.registry import training_files

    run = RunDir(source) if RunDir(source).is_run else None
    cfg = run.config(overrides) if run is not None else _config(source, overrides)
    train = training_files(cfg.data, cfg.task.name)
    others = [Path(p) for p in image_inputs([str(other)])]
    if min(len(train), len(others)) < FOLDS:
        raise KilnError(f"kiln shift needs at least {FOLDS} images on each side: {len(train)} training images, "
                        f"{len(others)} under {other}")
    features = _model_features(run) if run is not None else _picture_features(cfg)
    x = np.concatenate([features(train), features(others)])
    y = np.concatenate([np.zeros(len(train)), np.ones(len(others))])
    p = _out_of_fold(x, y, seed)
    from sklearn.metrics import roc_auc_score

    return Shift(float(roc_auc_score(y, p)), train, others, p[:len(train)], p[len(train):], cfg.data.root)


def _config(path: Path, overrides: list[str] | tuple[str, ...]) -> Config:
    from kiln.config.files import load_config

    return load_config(path, overrides)


def _out_of_fold(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Each sample's P(other folder) from a logistic regression that did not see it (stratified k folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    return cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]


def _picture_features(cfg: Config):
    """A config's images compared by a 16x16 picture and a colour histogram per channel (no model needed)."""
    from kiln.data.inputs.image import Pixels, image_batch

    channels = cfg.data.channels or 3
    pixels = Pixels(channels, (FEATURE_SIZE, FEATURE_SIZE), (0.0,) * channels, (1.0,) * channels,
                    crop=True)

    def features(paths: list[Path]) -> np.ndarray:
        rows = []
        for start in range(0, len(paths), 256):
            x = image_batch(paths[start:start + 256], pixels)  # (B, C, 16, 16) in [0, 1]
            hist = torch.stack([torch.stack([torch.histc(img[c], HISTOGRAM_BINS, 0, 1) for c in range(channels)])
                                for img in x]).flatten(1) / (FEATURE_SIZE * FEATURE_SIZE)
            rows.append(torch.cat([x.flatten(1), hist], 1).numpy())
        return np.concatenate(rows)

    return features


def _model_features(run: RunDir):
    """A run's images compared by its model's features: the input of its head, as the model sees the images."""
    from kiln.data.inputs.image import image_batch
    from kiln.models.freeze import head_prefix
    from kiln.train.device import autocast
    from kiln.train.trained import load_trained

    trained = load_trained(run)
    model, task = trained.model, trained.task
    head = model.get_submodule(head_prefix(model, trained.cfg.model.head))
    seen: list[torch.Tensor] = []
    head.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().flatten(1).float().cpu()))

    def features(paths: list[Path]) -> np.ndarray:
        seen.clear()
        with torch.no_grad():
            for start in range(0, len(paths), 256):
                batch = image_batch(paths[start:start + 256], trained.info).to(trained.device)
                with autocast(trained.device, trained.precision):
                    task.outputs(model, batch)
        return torch.cat(seen).numpy()

    return features


def write_val_like(shift: Shift, count: float, out: Path) -> tuple[Path, int]:
    """The training images most like the other folder's (`count` images, or that share of the training images
    when below 1), one per line relative to data.root: a validation split for data.val_files."""
    n = round(count * len(shift.train)) if count < 1 else int(count)
    if not 0 < n < len(shift.train):
        raise KilnError(f"--val-like {count:g}: give a number of images from 1 to {len(shift.train) - 1}, or a share "
                        "below 1 (0.1 = a tenth of the training images)")
    chosen, root = shift.most_like_other(n), shift.root
    lines = [str(p.resolve().relative_to(root.resolve())) if root and p.resolve().is_relative_to(root.resolve())
             else str(p.resolve()) for p in chosen]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# the training images most like the other folder's (kiln shift --val-like)\n"
                   + "\n".join(lines) + "\n")
    return out, n
