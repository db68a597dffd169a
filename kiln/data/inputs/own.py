"""Your own Dataset's samples after training: `kiln predict` builds it with split="predict" (and file=--file); kiln
cannot describe its inputs to an export, show them or turn them into baseline features (the base class says so)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kiln.data.inputs.base import Inputs, PredictQuery


class OwnInputs(Inputs):
    kind = "custom"
    own_code = True

    def model_args(self, info) -> dict[str, Any]:
        """The class count, and the image shape when the Dataset's samples have one."""
        shape = {"in_channels": info.in_channels, "image_size": info.image_size} if info.in_channels else {}
        return {"num_classes": info.num_classes, **shape}

    def predict_batches(self, query: PredictQuery) -> Iterator[tuple[list[str], Any]]:
        """Its split="predict" samples, in order, named by their index."""
        from kiln.data.user import predict_batches

        batches = predict_batches(query.cfg.data, query.info.num_classes, query.file, query.device,
                                  query.cfg.task.name)
        done = 0
        for inputs, _ in batches.epoch(0):
            count = _count(inputs)
            yield [f"sample {done + i}" for i in range(count)], inputs
            done += count


def _count(inputs: Any) -> int:
    """How many samples a batch of the Dataset's inputs holds (a tensor, a TextBatch, a tuple or a dict of them)."""
    if isinstance(inputs, dict):
        return _count(next(iter(inputs.values())))
    if isinstance(inputs, (tuple, list)):
        return _count(inputs[0])
    return len(inputs)
