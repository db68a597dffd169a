"""`kiln predict`: class probabilities for new inputs (texts, CSV rows or image files) from a trained run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from kiln.core.errors import KilnError
from kiln.data.inputs import PredictQuery, inputs_of, inputs_of_export
from kiln.tasks import Prediction
from kiln.train.device import autocast
from kiln.train.trained import Trained, load_trained

log = logging.getLogger("kiln")
# How many inputs must all get one answer before predict warns of a collapsed model.
CONSTANT_AFTER = 10


def predict(run_dir: Path, inputs: list[str], *, file: Path | None = None, checkpoint: str = "best",
            top_k: int = 3, overrides: Sequence[str] = (), path_column: str | None = None) -> list[Prediction]:
    """Predictions for `inputs` (and `file`) with a run's `checkpoint`, or with an exported ONNX model;
    `path_column`: the column of image paths in CSV inputs (default: the run's data.path_column, else the one
    column that names image files)."""
    if Path(run_dir).suffix == ".onnx":
        if file:
            raise KilnError("--file is for text runs; an exported ONNX model takes image paths")
        return warn_if_constant(predict_onnx(Path(run_dir), list(inputs), top_k, path_column))
    return predict_with(load_trained(run_dir, checkpoint, overrides), inputs, file=file, top_k=top_k,
                        path_column=path_column)


def predict_with(run: Trained, inputs: list[str], *, file: Path | None = None, top_k: int = 3,
                 path_column: str | None = None) -> list[Prediction]:
    """`predict` with a model already loaded: says which weights answer (and whether the run is unfinished)."""
    log.info("predicting with %s", run.provenance())
    if (unfinished := run.unfinished()) is not None:
        log.warning("%s", unfinished)
    return warn_if_constant(_predict(run, inputs, file, top_k, path_column))


def warn_if_constant(results: list[Prediction]) -> list[Prediction]:
    """Say so when many inputs all got the same answer: the sign of a model that collapsed onto one class."""
    labels = {r.label for r in results}
    if len(results) >= CONSTANT_AFTER and len(labels) == 1:
        log.warning("all %d inputs got the same prediction (%r): the model may have collapsed onto one answer "
                    "(its training log and kiln report say so when validation showed it, with the likely causes)",
                    len(results), next(iter(labels)))
    return results


def _predict(run: Trained, inputs: list[str], file: Path | None, top_k: int,
             path_column: str | None) -> list[Prediction]:
    """Every input through the model, batched as the run's data source batches them for inference."""

    query = PredictQuery(run.cfg, run.info, run.vocab if inputs_of(run.info).reads_text else None, run.device,
                         tuple(inputs), file, path_column)
    out: list[Prediction] = []
    task = run.task
    for labels, batch in inputs_of(run.info).predict_batches(query):
        with torch.no_grad(), autocast(run.device, run.precision):
            predicted = task.predictions(task.outputs(run.model, batch))
        predicted = predicted.float().cpu() if isinstance(predicted, torch.Tensor) else predicted  # detections: as is
        out += answers(task, labels, predicted, run.info.class_names, top_k)
    return out


def predict_onnx(path: Path, inputs: list[str], top_k: int = 3, path_column: str | None = None) -> list[Prediction]:
    """The same predictions from a model exported with `kiln export --format onnx` (through onnxruntime), its inputs
    encoded as the export's metadata describes."""
    from kiln.commands.export import onnx_metadata, run_exported, task_of

    if not path.is_file():
        raise KilnError(f"ONNX file not found: {path}")
    meta = onnx_metadata(path)
    labels, arrays = inputs_of_export(meta).exported_batch(meta, path, inputs, path_column)
    task = task_of(meta)
    logits = torch.from_numpy(run_exported(path, "onnx", *arrays))
    return answers(task, labels, task.predictions(logits), meta["class_names"], top_k)


def answers(task, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
    """The task's predictions for each input: the top-k classes; every label at or above its threshold (and every
    label's probability); the values of the targets in their original units."""
    return task.answers(inputs, predicted, names, top_k)
