"""The inference side of a data source: what a kind of model input (`DataInfo.kind`) is to everything after training
— predict, export, report, baseline, inspect — so none of them branches on the kind of data.

    inputs_of(info)        the `Inputs` of a run's data: images, texts, or your own Dataset's samples
    inputs_of_export(meta) the `Inputs` an exported model's metadata describes

A new kind of input is an `Inputs` subclass (kiln.data.inputs.base) and one entry in `KINDS`.
"""

from __future__ import annotations

from kiln.core.errors import KilnError
from kiln.core.formats import ExportMeta
from kiln.data.inputs.base import Inputs, PredictQuery, Shown
from kiln.data.inputs.image import ImageInputs
from kiln.data.inputs.own import OwnInputs
from kiln.data.inputs.text import TextInputs

__all__ = ["KINDS", "Inputs", "PredictQuery", "Shown", "inputs_of", "inputs_of_export"]


def inputs_of(info) -> Inputs:
    """The `Inputs` of data described by `info` (a DataInfo, or its kind)."""
    kind = info if isinstance(info, str) else info.kind
    if kind not in KINDS:
        raise KilnError(f"unknown kind of data {kind!r} (kiln knows {', '.join(KINDS)})")
    return KINDS[kind]


def inputs_of_export(meta: ExportMeta) -> Inputs:
    """The `Inputs` whose export metadata this is (the layouts of text inputs, else images)."""
    layout = meta.get("input", {}).get("layout")
    return next((inputs for inputs in KINDS.values() if layout in inputs.export_layouts), KINDS["image"])


KINDS: dict[str, Inputs] = {inputs.kind: inputs for inputs in (ImageInputs(), TextInputs(), OwnInputs())}
