"""`kiln baseline`: a classical model on exactly the split a run uses, so a user sees at once whether the network
earns its keep. Text: TF-IDF of kiln's own tokens (unigrams and bigrams); images: the pixels as the model sees
them (no augmentation), average-pooled to at most 16x16 and standardised. Then logistic regression (multiclass),
one per label (multilabel) or ridge regression (regression). scikit-learn does the fitting
(`pip install -e .[baseline]`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from kiln.core.errors import KilnError
from kiln.runs import RunDir
from kiln.tasks import task_class

log = logging.getLogger("kiln")


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
    from kiln.data.inputs import inputs_of
    from kiln.data.registry import kind_of
    from kiln.train.plan import RunPlan

    run = RunDir.open(target) if Path(target).is_dir() else None
    cfg = run.config(overrides) if run else load_config(target, overrides)
    inputs_of(kind_of(cfg.data.name)).check_baseline()  # before any data is read, as is the task's model
    task = task_class(cfg.task.name)
    task.baseline(1.0)  # a task without a classical model (detection, segmentation) says so now
    data_cfg = _without_augmentation(cfg.data)
    plan = RunPlan.of(cfg.with_values({"data": data_cfg}), torch.device("cpu"), ProcessInfo())
    data = plan.data(vocab=run.vocab() if run else fresh_encoder(cfg))
    split = "test" if data.test is not None else "val"
    if getattr(data, split) is None:
        raise KilnError("the data has neither a test nor a validation split to score the baseline on")
    inputs = inputs_of(data.info)
    started = time.perf_counter()
    x_train, y_train, x_eval, y_eval = inputs.baseline_features(data.require("train"), data.require(split))
    estimator, name = task.baseline(inputs.baseline_strength)
    estimator.fit(x_train, y_train)
    result = {"baseline": f"{name} on {inputs.baseline_description}", "task": cfg.task.name, "split": split,
              "num_train": len(y_train), "num_eval": len(y_eval),
              **task.baseline_scores(y_eval, estimator.predict(x_eval)),
              "seconds": round(time.perf_counter() - started, 2)}
    if run is not None:
        run.write_baseline(result)
    return result


def _without_augmentation(data_cfg):
    """The same data with the training split as evaluation sees it: a classical model gets no augmentation."""
    # One training "batch" of everything: a training sampler drops its last partial batch, which on a few hundred
    # samples would hide a real share of them from the baseline.
    return data_cfg.with_values({"augment.crop_padding": 0, "augment.hflip": False, "augment.resized_crop": False,
                                 "transforms.train": None,
                                 "eval_batch_size": data_cfg.eval_batch_size or 4 * data_cfg.batch_size,
                                 "batch_size": 2**31 - 1})
