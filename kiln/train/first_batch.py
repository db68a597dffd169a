"""Your own Dataset and model meet before training starts."""

from __future__ import annotations

import torch

from kiln.core.errors import KilnError
from kiln.train.loop import Trainer


def check_first_batch(t: Trainer) -> None:
    """Your own Dataset and model meet before training starts: the first training batch goes through the model
    (eval mode, no gradients, nothing changes) and the loss, so a mismatch is a message naming the samples and
    their shapes instead of a traceback minutes in."""
    from kiln.core.errors import first_line
    from kiln.data.user import describe as shapes
    from kiln.data.user import first_batch_samples
    from kiln.train.step import forward

    batches = t.train_batches
    indices = first_batch_samples(batches)
    inputs, targets = next(iter(batches.epoch(0)))
    where = f"the first training batch (samples {indices}...: inputs {shapes(inputs)}, labels {shapes(targets)})"
    was_training = t.model.training
    t.model.eval()
    try:
        with torch.no_grad():
            try:
                outputs = t.task.logits(forward(t.model, inputs))
            except KilnError:
                raise
            except Exception as e:  # noqa: BLE001 — whatever the model raises on these shapes
                raise KilnError(f"the model cannot take {where}: {first_line(e)}. Check the input shape and "
                                "channels the model expects, and the keys of dict inputs") from None
            try:
                t.task.objective(outputs.float(), targets)
            except Exception as e:  # noqa: BLE001
                raise KilnError(f"the loss cannot compare the model's outputs {shapes(outputs)} with the labels of "
                                f"{where}: {first_line(e)}. {t.task.check_message()}") from None
    finally:
        t.model.train(was_training)
