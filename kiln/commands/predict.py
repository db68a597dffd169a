"""`kiln predict`: class probabilities for new inputs (texts, CSV rows or image files) from a trained run."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.core.errors import KilnError
from kiln.data.inputs import PredictQuery, inputs_of, inputs_of_export
from kiln.runs import RunDir
from kiln.tasks import Prediction, Task
from kiln.train.device import autocast
from kiln.train.ensemble import averaged_outputs
from kiln.train.trained import Trained, load_trained

log = logging.getLogger("kiln")
# How many inputs must all get one answer before predict warns of a collapsed model.
CONSTANT_AFTER = 10


@dataclass(frozen=True)
class Ask:
    """What `kiln predict` is asked besides the models and the inputs."""

    file: Path | None = None  # text runs: a CSV of texts; your own Dataset: passed as file=...
    checkpoint: str = "best"
    top_k: int = 3
    overrides: Sequence[str] = ()
    path_column: str | None = None  # CSV inputs: the column of image paths
    tta: str | None = None  # test-time views averaged (kiln.train.ensemble.tta_views)
    weights: Sequence[float] | None = None  # an ensemble's weights, in the models' order (default equal)


def predict(run_dir: Path | Sequence[Path], inputs: list[str], ask: Ask = Ask()) -> list[Prediction]:
    """Predictions for `inputs` (and `ask.file`) with a run's checkpoint, or with an exported ONNX model;
    `ask.path_column`: the column of image paths in CSV inputs (default: the run's data.path_column, else the one
    column that names image files). Several runs or ONNX files (or a `kiln cv` folder: its folds) answer as one
    ensemble, their answers averaged (`ask.weights`, default equal); `ask.tta` averages each model's answers over
    test-time views of each image."""
    return predict_named(run_dir, inputs, ask)[0]


def write_predictions(models: Sequence[Path], results: list[Prediction], out: Path) -> str:
    """`kiln predict --out`: written by the task, with the ids the first run's data gives its images (a COCO file's
    image ids)."""
    from kiln.data.registry import image_ids
    from kiln.tasks import task_class

    run = RunDir(models[0])
    ids = image_ids(run.config().data) if run.is_run else {}
    return task_class(results[0].kind if results else "multiclass").write_predictions(results, out, ids)


def predict_named(run_dir: Path | Sequence[Path], inputs: list[str], ask: Ask = Ask()
                  ) -> tuple[list[Prediction], list[str]]:
    """`predict`, and the names of the model's outputs (classes, labels, targets) in order."""
    from kiln.train.ensemble import expand_runs, weights_of

    paths = expand_runs([run_dir] if isinstance(run_dir, (str, Path)) else run_dir)
    shares = weights_of(ask.weights, len(paths))
    if ask.file and any(p.suffix == ".onnx" for p in paths):
        raise KilnError("--file is for text runs; an exported ONNX model takes image paths")
    if ask.overrides and any(p.suffix == ".onnx" for p in paths):
        raise KilnError(f"--set {ask.overrides[0]} changes a run's config; an exported model's settings are fixed in "
                        "its metadata: predict with the run folder")
    if len(paths) == 1 and paths[0].suffix != ".onnx":
        trained = load_trained(paths[0], ask.checkpoint, ask.overrides)
        return predict_with(trained, inputs, file=ask.file, top_k=ask.top_k, path_column=ask.path_column,
                            tta=ask.tta), trained.info.class_names
    members = [_member(p, inputs, ask) for p in paths]
    labels, task, names = members[0].labels, members[0].task, members[0].names
    for m in members[1:]:
        if m.task.name != task.name or m.names != names:
            raise KilnError(f"{m.source} ({m.task.name}: {', '.join(m.names[:5])}...) does not answer the same "
                            f"question as {members[0].source} ({task.name}: {', '.join(names[:5])}...): an "
                            "ensemble averages models of one task over the same classes, labels or targets")
        if m.labels != labels:
            raise KilnError(f"{m.source} read other inputs than {members[0].source} from the same arguments")
    outputs = averaged_outputs(task, [m.outputs for m in members], shares)
    return warn_if_constant(task, task.answers(labels, task.predictions(outputs), names, ask.top_k)), names


@dataclass
class Member:
    """One model's answers to the inputs: the inputs as it names them, its raw outputs, its task and output names."""

    source: Path
    labels: list[str]
    outputs: Any  # a batch of outputs (a tensor; a detector's list of detections)
    task: Task
    names: list[str]


def _member(path: Path, inputs: list[str], ask: Ask) -> Member:
    if path.suffix == ".onnx":
        return Member(path, *onnx_outputs(path, inputs, ask.path_column, ask.tta))
    run = load_trained(path, ask.checkpoint, ask.overrides)
    _say_which(run)
    labels: list[str] = []
    answered: list[torch.Tensor] = []
    for batch_labels, batch_outputs in _outputs(run, inputs, ask.file, ask.path_column, ask.tta):
        if not isinstance(batch_outputs, torch.Tensor):
            raise KilnError(f"{path}: its answers ({run.task.name}) cannot be averaged with other models'")
        labels += batch_labels
        answered.append(batch_outputs.float().cpu())
    return Member(path, labels, torch.cat(answered), run.task, run.info.class_names)


def _say_which(run: Trained) -> None:
    """Which weights answer, and whether the run is unfinished."""
    log.info("predicting with %s", run.provenance())
    if (unfinished := run.unfinished()) is not None:
        log.warning("%s", unfinished)


def predict_with(run: Trained, inputs: list[str], *, file: Path | None = None, top_k: int = 3,
                 path_column: str | None = None, tta: str | None = None) -> list[Prediction]:
    """`predict` with a model already loaded: says which weights answer (and whether the run is unfinished)."""
    _say_which(run)
    out: list[Prediction] = []
    task = run.task
    for labels, outputs in _outputs(run, inputs, file, path_column, tta):
        predicted = task.predictions(outputs)
        predicted = predicted.float().cpu() if isinstance(predicted, torch.Tensor) else predicted  # detections: as is
        out += answers(task, labels, predicted, run.info.class_names, top_k)
    return warn_if_constant(task, out)


def warn_if_constant(task: Task, results: list[Prediction]) -> list[Prediction]:
    """Say so when many inputs all got the same answer: the sign of a model that collapsed onto one class (for a
    task whose label is the answer — not a segmentation's largest class or the classes a detector found)."""
    labels = {r.label for r in results}
    if task.label_is_the_answer and len(results) >= CONSTANT_AFTER and len(labels) == 1:
        log.warning("all %d inputs got the same prediction (%r): the model may have collapsed onto one answer "
                    "(its training log and kiln report say so when validation showed it, with the likely causes)",
                    len(results), next(iter(labels)))
    return results


def _outputs(run: Trained, inputs: list[str], file: Path | None, path_column: str | None,
             tta: str | None) -> Iterator[tuple[list[str], Any]]:
    """Every input through the model (averaged over the `tta` views), batched as the run's data source batches
    them for inference: (the inputs' names, the model's outputs) per batch."""
    from kiln.train.ensemble import with_views

    query = PredictQuery(run.cfg, run.info, run.vocab if inputs_of(run.info).reads_text else None, run.device,
                         tuple(inputs), file, path_column)
    task = run.task
    model = with_views(run.model, task, tta)
    for labels, batch in inputs_of(run.info).predict_batches(query):
        with torch.no_grad(), autocast(run.device, run.precision):
            yield labels, task.outputs(model, batch)


def predict_onnx(path: Path, inputs: list[str], top_k: int = 3, path_column: str | None = None,
                 tta: str | None = None) -> list[Prediction]:
    """The same predictions from a model exported with `kiln export --format onnx` (through onnxruntime), its inputs
    encoded as the export's metadata describes (and averaged over the `tta` views)."""
    labels, outputs, task, names = onnx_outputs(path, inputs, path_column, tta)
    return answers(task, labels, task.predictions(outputs), names, top_k)


def onnx_outputs(path: Path, inputs: list[str], path_column: str | None, tta: str | None
                 ) -> tuple[list[str], Any, Task, list[str]]:
    """An exported model's outputs for the inputs, as its task's `outputs` gives a run's: (the inputs' names,
    outputs, its task, its output names)."""
    from kiln.commands.export import exported_runner, graph_outputs, onnx_metadata, task_of
    from kiln.train.ensemble import check_image_batch, tta_views

    if not path.is_file():
        raise KilnError(f"ONNX file not found: {path}")
    meta = onnx_metadata(path)
    labels, arrays = inputs_of_export(meta).exported_batch(meta, path, inputs, path_column)
    task, views, run = task_of(meta), tta_views(tta), exported_runner(path, "onnx")

    def answer(batch: tuple[np.ndarray, ...]) -> Any:
        return task.from_graph(graph_outputs(run, meta, batch), torch.from_numpy(batch[0]))

    if len(views) == 1:
        return labels, answer(arrays), task, meta["class_names"]
    images = torch.from_numpy(arrays[0])
    check_image_batch(images)
    answers = []
    for view in views:  # the same views as a run's --tta (kiln.train.ensemble.WithViews)
        out = answer((view.apply(images).numpy(), *arrays[1:]))
        if task.pixel_outputs:
            if view.undo is None:
                raise KilnError(f"--tta {tta}: crops cannot be mapped back onto the image's pixels; use hflip or flips")
            out = view.undo(out.float())
        answers.append(out)
    return labels, task.average(answers, [1 / len(answers)] * len(answers)), task, meta["class_names"]


def answers(task, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
    """The task's predictions for each input: the top-k classes; every label at or above its threshold (and every
    label's probability); the values of the targets in their original units."""
    return task.answers(inputs, predicted, names, top_k)
