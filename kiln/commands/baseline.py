"""`kiln baseline`: a classical model on exactly the split a run uses, so a user sees at once whether the network
earns its keep. Text: TF-IDF of kiln's own tokens (unigrams and bigrams); images: the pixels as the model sees
them (no augmentation), average-pooled to at most 16x16 and standardised. Then logistic regression (multiclass),
one per label (multilabel) or ridge regression (regression). scikit-learn does the fitting
(`pip install -e .[baseline]`)."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.core.errors import KilnError
from kiln.runs import RunDir
from kiln.tasks import TASKS

log = logging.getLogger("kiln")
MAX_SIDE = 16


def run_baseline(target: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Fit on the training split of a config's (or a run's) data, score on its test split (else validation).
    With a run folder, the result is written into it (baseline.json) and shown by `kiln report`."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise KilnError("kiln baseline needs scikit-learn: pip install -e .[baseline]") from None
    from kiln.config import load_config
    from kiln.core.dist import ProcessInfo
    from kiln.data import fresh_encoder
    from kiln.train.plan import RunPlan

    run = RunDir.open(target) if Path(target).is_dir() else None
    cfg = run.config(overrides) if run else load_config(target, overrides)
    if ":" in cfg.data.name:
        raise KilnError("kiln baseline works on kiln's image and text datasets; a Dataset of your own has inputs "
                        "kiln cannot turn into features")
    data_cfg = _without_augmentation(cfg.data)
    plan = RunPlan.of(cfg.with_values({"data": data_cfg}), torch.device("cpu"), ProcessInfo())
    data = plan.data(vocab=run.vocab() if run else fresh_encoder(cfg))
    split = "test" if data.test is not None else "val"
    if getattr(data, split) is None:
        raise KilnError("the data has neither a test nor a validation split to score the baseline on")
    kind = data.info.kind
    started = time.perf_counter()
    x_train, y_train, x_eval, y_eval = _features(kind, data.require("train"), data.require(split))
    model = _model(cfg.task.name, kind)
    model.fit(x_train, y_train)
    result = {"baseline": _describe(cfg.task.name, kind), "task": cfg.task.name, "split": split,
              "num_train": len(y_train), "num_eval": len(y_eval),
              **_scores(cfg.task.name, y_eval, model.predict(x_eval)),
              "seconds": round(time.perf_counter() - started, 2)}
    if run is not None:
        run.write_baseline(result)
    return result


def _model(task: str, kind: str):
    """The task's classical model (kiln.tasks: logistic regression, one per label, or ridge regression)."""
    return TASKS[task].baseline(kind)[0]


def _describe(task: str, kind: str) -> str:
    model = TASKS[task].baseline(kind)[1]
    features = ("TF-IDF (unigrams + bigrams of kiln's tokens)" if kind == "text" else
                f"pixels pooled to at most {MAX_SIDE}x{MAX_SIDE}, standardised")
    return f"{model} on {features}"


def _scores(task: str, truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The task's headline metrics, named as in test_metrics.json."""
    return TASKS[task].baseline_scores(truth, predicted)


def _without_augmentation(data_cfg):
    """The same data with the training split as evaluation sees it: a classical model gets no augmentation."""
    # One training "batch" of everything: a training sampler drops its last partial batch, which on a few hundred
    # samples would hide a real share of them from the baseline.
    return data_cfg.with_values({"augment.crop_padding": 0, "augment.hflip": False, "augment.resized_crop": False,
                                 "transforms.train": None,
                                 "eval_batch_size": data_cfg.eval_batch_size or 4 * data_cfg.batch_size,
                                 "batch_size": 2**31 - 1})


def _features(kind: str, train, evaluation) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    if kind == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer

        train_docs, y_train = _token_lists(train)
        eval_docs, y_eval = _token_lists(evaluation)
        vectorizer = TfidfVectorizer(analyzer=_unigrams_and_bigrams, sublinear_tf=True, min_df=1)
        return vectorizer.fit_transform(train_docs), y_train, vectorizer.transform(eval_docs), y_eval
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _pooled_pixels(train)
    x_eval, y_eval = _pooled_pixels(evaluation)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), y_train, scaler.transform(x_eval), y_eval


def _unigrams_and_bigrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]


def _token_lists(batches) -> tuple[list[list[str]], np.ndarray]:
    """Every sample's token ids (as strings), and the labels, from kiln's own text batches."""
    docs, labels = [], []
    for batch, y in batches.epoch(0):
        if batch.offsets is None:
            docs += [[str(t) for t in row[:n].tolist()] for row, n in zip(batch.ids, batch.lengths.tolist())]
        else:
            ends = (batch.offsets + batch.lengths.to(batch.offsets.device)).tolist()
            docs += [[str(t) for t in batch.ids[s:e].tolist()] for s, e in zip(batch.offsets.tolist(), ends)]
        labels.append(y.cpu())
    return docs, torch.cat(labels).numpy()


def _pooled_pixels(batches) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for x, y in batches.epoch(0):
        x = x.float()
        side = (min(MAX_SIDE, x.shape[2]), min(MAX_SIDE, x.shape[3]))
        feats.append(torch.nn.functional.adaptive_avg_pool2d(x, side).flatten(1).cpu())
        labels.append(y.cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()
