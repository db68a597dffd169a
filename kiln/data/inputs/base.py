"""What every kind of input provides after training (kiln.data.inputs says who asks)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from kiln.core.errors import KilnError
from kiln.core.formats import ExportInput, ExportMeta


@dataclass(frozen=True)
class PredictQuery:
    """What `kiln predict` was given for a run: its config, data description and vocabulary; the raw inputs (texts,
    image files, folders, globs, CSVs), a --file and the column of image paths; the device to batch onto."""

    cfg: Any  # kiln.config.Config
    info: Any  # kiln.data.DataInfo
    vocab: Any
    device: torch.device
    inputs: Sequence[str] = ()
    file: Path | None = None
    path_column: str | None = None


@dataclass(frozen=True)
class Shown:
    """Samples as people look at them: uint8 images (N, C, H, W), or texts."""

    images: np.ndarray | None = None
    texts: list[str] | None = None


class Inputs(ABC):
    """One kind of model input, asked by every command that turns raw inputs into model inputs or shows them."""

    kind: ClassVar[str]
    reads_text: ClassVar[bool] = False  # a text encoder (hf:NAME) can read these inputs
    own_code: ClassVar[bool] = False  # made by the user's own code: the first batch is checked against the model

    @abstractmethod
    def model_args(self, info) -> dict[str, Any]:
        """The constructor arguments a model takes from the data rather than from model.args."""

    @abstractmethod
    def predict_batches(self, query: PredictQuery) -> Iterator[tuple[list[str], Any]]:
        """(the inputs' names, a model-ready batch on query.device) for everything the query names, in order."""

    # -- export
    export_layouts: ClassVar[tuple[str, ...]] = ()  # the layouts of its exported graphs' inputs

    def export_layout(self, cfg) -> str:
        """The exported graph's input layout (a key of kiln.commands.export.WRAPPERS)."""
        raise KilnError("kiln export handles kiln's image and text data; this run was trained on your own Dataset, "
                        "whose inputs kiln cannot describe to a caller — export trained.model yourself (kiln.train."
                        "trained.load_trained gives it) with torch.onnx.export or torch.export")

    def export_input(self, info, cfg, vocab) -> ExportInput:
        """The export metadata's `input` entry: what a caller feeds the exported model (here: a safetensors file of
        weights trained on inputs kiln did not make)."""
        return {"layout": "dataset", "tensors": {"inputs": "what your Dataset returns as x, passed as model(x), "
                                                           "model(*x) for a tuple, model(**x) for a dict"}}

    def stand_in(self, info, layout: str, size: int) -> Any:
        """A seeded batch of `size` inputs of the model's shape, for checking an export without the data."""
        raise NotImplementedError  # export_layout refused first

    def exported_batch(self, meta: ExportMeta, path: Path, inputs: Sequence[str],
                       path_column: str | None) -> tuple[list[str], tuple[np.ndarray, ...]]:
        """(the inputs' names, the arrays an exported model takes) for raw `inputs`, encoded as its metadata says
        (`path`: the exported file)."""
        raise NotImplementedError  # no export has this kind's layout

    # -- showing, and a classical baseline
    def show(self, cfg, batches, indices: torch.Tensor) -> Shown:
        """The samples at `indices` (in split order) of `batches`, as people look at them."""
        raise KilnError("kiln shows kiln's images and texts; your own Dataset's inputs are not shown")

    def shown_batch(self, x: Any, info) -> np.ndarray | None:
        """A batch as the model receives it, de-normalised to uint8 images for display; None: not images."""
        return None

    def one(self, value: str, info, cfg, vocab) -> Any:
        """One raw input (an image path, a text) as a batch of one."""
        raise KilnError("kiln cannot make your own Dataset's inputs from a string; inspect a run on kiln's data")

    def baseline_features(self, train, evaluation) -> tuple[Any, np.ndarray, Any, np.ndarray]:
        """(x_train, y_train, x_eval, y_eval): features a classical model fits, from the splits' batches."""
        self.check_baseline()
        raise NotImplementedError  # an Inputs with a baseline_description implements this

    def check_baseline(self) -> None:
        """Raise before any data is read when kiln has no classical baseline for these inputs."""
        if not self.baseline_description:
            raise KilnError("kiln baseline works on kiln's image and text datasets; a Dataset of your own has inputs "
                            "kiln cannot turn into features")

    baseline_description: ClassVar[str] = ""
    baseline_strength: ClassVar[float] = 1.0  # the inverse regularisation (scikit-learn's C) of its linear models
