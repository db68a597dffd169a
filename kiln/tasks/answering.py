"""What a task does after training: its predictions as `kiln predict` gives them (rows, files, drawn overlays) and
what an exported graph of its model is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln.core.errors import KilnError


@dataclass
class Prediction:
    """One input's prediction, as `kiln predict` prints or writes it."""

    input: str
    label: str  # the class; the labels predicted, `a|b` (multilabel); the values, `name value ...` (regression)
    probability: float | None  # the class's probability (multiclass only)
    top: list[tuple[str, float]]  # the top-k (class, probability), best first; every label's probability, best
    # first (multilabel); (target, value) of every target (regression)
    kind: str = "multiclass"  # the task
    detail: Any = None  # what a task writes besides the row, e.g. a segmentation's mask (Task.write_predictions)


class Answering:
    """The defaults: the top-k classes of probabilities, one row per input."""

    name = ""
    exported: tuple[str, ...] = ()  # task settings an export's metadata carries
    export_formats: tuple[str, ...] | None = None  # the kiln export formats its models take (None: every one)
    output_doc = ""  # what an exported model's output is, for its metadata
    # The test figures kiln report shows (test_metrics.json holds what they need): confusion (a confusion matrix
    # and per-class scores), per_label (multilabel's table), predicted_vs_true (regression's scatter and
    # residuals), scores (the default: the scores, a table for each per-class one, the worst images where marked)
    report_view = "scores"
    # A prediction's label is its whole answer, so many inputs with one label mean a collapsed model (not so for a
    # summary of marks: a segmentation's largest class, the classes a detector found)
    label_is_the_answer = True

    # -- the exported graph (kiln export): by default the input layout's wrapper, returning logits for a whole batch
    def export_graph(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The module an export holds for this task's model, or None: the input layout's own wrapper, which returns
        the logits (`logits` of the model's outputs) of a whole batch. A module of the task's own takes the image
        batch and may set `output_names` (its outputs, in order), `batch_size` (1: the graph takes one input at a
        time, as detectors' post-processing does; kiln runs it input by input), `traced` (exported by torch.onnx's
        TorchScript-based exporter, for shapes torch.export cannot follow), `tolerances` ({output: the largest
        difference accepted}), `differences(expected, got)` (its own comparison, e.g. boxes as sets) and
        `shape_hint` (why an output may differ in shape). kiln's detection task is the worked example."""
        return None

    def from_graph(self, answers: list[tuple[torch.Tensor, ...]], inputs: torch.Tensor) -> Any:
        """What `outputs` returns for a batch of `inputs`, from an exported graph's answers to it (one tuple of its
        outputs per call: one call for the batch, or one per input where the graph takes one at a time).
        Default: the logits of the calls, in order."""
        return torch.cat([outputs[0] for outputs in answers])

    @classmethod
    def overlay(cls, images: Any, targets: Any, num_classes: int) -> Any:
        """A batch's uint8 images (B, C, H, W) for showing, with what the targets mark on them drawn in (a mask,
        boxes); default: as they are."""
        return images

    @classmethod
    def marks(cls, r: Prediction, size: tuple[int, int]) -> Any:
        """A prediction as the targets `overlay` draws, for an image of `size` (width, height): a mask, boxes. None:
        nothing to draw (a class per image)."""
        return None

    image_score = "score"  # what image_scores measures, as the report titles it

    def image_scores(self, predictions: Any, targets: Any) -> tuple[list[float], list[Any]] | None:
        """For tasks that mark images (masks, boxes): each image's score (higher is better; the report shows the
        worst) and its predicted marks as `overlay` draws them, from a batch's `predictions()`. None: no such view."""
        return None

    @classmethod
    def write_overlays(cls, results: list[Prediction], folder: Path, names: list[str]) -> str:
        """`kiln predict --overlay DIR`: each input image with its prediction drawn in (`marks` + `overlay`), as a PNG
        named by the input's stem, at the input's size."""
        import numpy as np
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        for r in results:
            with Image.open(r.input) as img:
                rgb = img.convert("RGB")
            marks = cls.marks(r, rgb.size)
            if marks is None:
                raise KilnError(f"--overlay draws masks and boxes; a {cls.name or 'task of your own'} run's answer is "
                                "one row per image: use --out FILE.csv")
            image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
            drawn = cls.overlay(image[None], [marks], len(names))[0]
            Image.fromarray(np.ascontiguousarray(np.transpose(drawn, (1, 2, 0)))).save(folder / f"{Path(r.input).stem}.png")
        return f"wrote {len(results)} overlays (PNG) to {folder}"

    # -- predictions as `kiln predict` gives them (the defaults: the top-k classes of probabilities)
    def answers(self, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
        """The top-k classes of each input, best first."""
        k = min(top_k, len(names))
        out = []
        for text, p in zip(inputs, predicted):
            values, idx = p.topk(k)
            top = [(names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]
            out.append(Prediction(text, top[0][0], top[0][1], top, self.name or "multiclass"))
        return out

    @classmethod
    def submission_value(cls, r: Prediction, names: list[str], as_index: bool) -> str:
        """What a submission file's label cell holds for a prediction: the class's name, or its index in the run's
        class order."""
        if not as_index:
            return r.label
        if r.label not in names:
            raise KilnError(f"{r.input}: its answer {r.label!r} is not one class of the run's; write names "
                            "(--labels name)")
        return str(names.index(r.label))

    @classmethod
    def prediction_text(cls, r: Prediction) -> str:
        """`label 0.953  other 0.021 ...`"""
        return f"{r.label}\t{r.probability:.3f}\t" + "  ".join(f"{lab} {p:.3f}" for lab, p in r.top[1:])

    @classmethod
    def prediction_json(cls, r: Prediction) -> dict[str, Any]:
        return {"input": r.input, "label": r.label, "probability": r.probability,
                "top": [{"label": lab, "probability": p} for lab, p in r.top]}

    @classmethod
    def write_predictions(cls, results: list[Prediction], out: Path, ids: dict[str, int] | None = None) -> str:
        """`kiln predict --out OUT`: the predictions written (default: a CSV file, the task's columns, whole or not
        at all); what was written, for the console. `ids`: the dataset's own id of inputs it lists (resolved path
        -> id), for formats that name images by id (COCO results)."""
        import csv
        import io

        from kiln.core.state import atomic_write

        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(cls.csv_header(results[0] if results else None))
        writer.writerows(cls.csv_row(r) for r in results)
        atomic_write(out, lambda f: f.write(text.getvalue().encode("utf-8")))
        return f"wrote {len(results)} predictions to {out}"

    @classmethod
    def csv_header(cls, first: Prediction | None) -> list[str]:
        return ["file", "label", "probability", "top_k"]

    @classmethod
    def csv_row(cls, r: Prediction) -> list[str]:
        return [r.input, r.label, f"{r.probability:.6f}", "|".join(f"{lab}:{p:.4f}" for lab, p in r.top)]

