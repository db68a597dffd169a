"""Your own Dataset, model or task meet before training starts."""

from __future__ import annotations

import torch

from kiln.core.errors import KilnError
from kiln.train.loop import Trainer


def check_first_batch(t: Trainer) -> None:
    """Your own Dataset, model or task meet before training starts: the first training batch goes through the
    model (eval mode, no gradients, nothing changes), the loss and the task's metrics, so a mismatch is a message
    naming the samples and their shapes instead of a traceback minutes in."""
    from kiln.core.errors import first_line
    from kiln.data.user import describe as shapes
    from kiln.data.user import first_batch_samples

    batches = t.train_batches
    indices = first_batch_samples(batches)
    inputs, targets = next(iter(batches.epoch(0)))
    samples = f"samples {indices}...: " if indices else ""
    where = f"the first training batch ({samples}inputs {shapes(inputs)}, labels {shapes(targets)})"
    was_training = t.model.training
    t.model.eval()
    try:
        with torch.no_grad():
            try:
                outputs = t.task.outputs(t.model, inputs)
            except KilnError:
                raise
            except Exception as e:  # noqa: BLE001 — whatever the model raises on these shapes
                raise KilnError(f"the model cannot take {where}: {first_line(e)}. Check the input shape and "
                                "channels the model expects, and the keys of dict inputs") from None
            try:
                t.task.objective(outputs.float(), targets)
            except KilnError:
                raise  # the task said what is wrong (a loss that is not a scalar)
            except Exception as e:  # noqa: BLE001
                raise KilnError(f"the loss cannot compare the model's outputs {shapes(outputs)} with the labels of "
                                f"{where}: {first_line(e)}. {t.task.check_message()}") from None
            _check_metrics(t, outputs.float(), targets, where)
    finally:
        t.model.train(was_training)


def _check_metrics(t: Trainer, outputs: torch.Tensor, targets: object, where: str) -> None:
    """The task's metrics on the first batch: they take its outputs and targets, and compute what val_metrics()
    names (on a copy: the epoch's metrics start from nothing)."""
    from kiln.core.errors import first_line

    metrics = t.task.metrics(outputs.device)
    try:
        metrics.update(outputs, targets)  # type: ignore[arg-type]
        computed = metrics.compute()
    except Exception as e:  # noqa: BLE001 — whatever a metric raises on these shapes
        raise KilnError(f"the task's metrics cannot take the model's outputs on {where}: {first_line(e)}") from None
    t.task.check_computed(computed)
