"""The callback interface (Keras-style): every hook is optional."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.train.loop import Trainer


class Callback:
    """Override the hooks you need. `state_key` names the callback's state in checkpoints (None: no state)."""

    state_key: str | None = None

    def on_fit_start(self, trainer: "Trainer") -> None:
        """Before the first epoch of this `fit` (also after a resume)."""

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """At the start of `epoch` (1-based, as `on_epoch_end` and the log count), after the model is put in
        training mode."""

    def on_step_end(self, trainer: "Trainer") -> None:
        """After each training batch (`trainer.state` already counts it)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        """After `epoch` (1-based) with its metrics. Set `trainer.stop_training = True` to end training."""

    def on_interrupt(self, trainer: "Trainer") -> None:
        """A stop was asked for (Ctrl-C / SIGTERM) mid-epoch: the state is consistent and may be saved."""

    def on_fit_end(self, trainer: "Trainer") -> None:
        """After the last epoch (or an early stop)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. `LambdaCallback(on_step_end=lambda trainer: ...)`."""

    def __init__(self, *, on_step_end: Callable[["Trainer"], None] | None = None,
                 on_epoch_end: Callable[[int, dict[str, float]], None] | None = None):
        self._step_end, self._epoch_end = on_step_end, on_epoch_end

    def on_step_end(self, trainer: "Trainer") -> None:
        if self._step_end is not None:
            self._step_end(trainer)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        if self._epoch_end is not None:
            self._epoch_end(epoch, metrics)
