"""`Checkpoint`: what a kiln checkpoint holds, typed. On disk it stays a flat dict of plain data and tensors (what
`torch.save` writes and `torch.load(weights_only=True)` reads back, one entry per part); `payload` and `of` convert.
kiln's code reads and writes checkpoints through this type only, so a part has one name and one meaning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.core.state import load_checkpoint, save_checkpoint

# The parts kiln itself names; any other entry of a saved checkpoint is a callback's state (under its state_key).
_PARTS = ("format", "config", "data_info", "world_size", "global_batch_size", "model", "raw_model", "ema",
          "optimizer", "schedule", "scaler", "loop", "running", "rng", "rng_ranks", "sha256", "shards")


@dataclass
class LoopState:
    """Where training stands, saved in every checkpoint as its `loop` part."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current, unfinished epoch
    step: int = 0  # optimizer steps so far
    finished: bool = False

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True)
class RunMeta:
    """What a checkpoint says about the run that wrote it (the same in every checkpoint of the run)."""

    config: dict[str, Any]  # the config it trained with, as plain data
    data_info: dict[str, Any]  # kiln.data.DataInfo as plain data: what a model and `kiln predict` need to know
    world_size: int = 1
    global_batch_size: int | None = None


@dataclass
class Checkpoint:
    """A checkpoint's parts. A training checkpoint has them all; older or foreign-made ones may lack the training
    state (then only `model` and `meta` are used: test, predict, export, fine-tuning)."""

    model: dict[str, Any]  # the weights (with trainer.ema: the average)
    meta: RunMeta | None = None
    loop: LoopState = field(default_factory=LoopState)
    optimizer: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    running: dict[str, Any] | None = None  # the running training metrics of the unfinished epoch
    raw_model: dict[str, Any] | None = None  # with trainer.ema: the weights themselves
    ema: dict[str, Any] | None = None  # with trainer.ema: the average's own state
    callbacks: dict[str, Any] = field(default_factory=dict)  # each callback's state, by its state_key
    rng: dict[str, Any] | None = None  # the global generators (kiln.core.state.rng_state)
    rng_ranks: list[Any] | None = None  # every rank's, in a multi-process run
    sha256: str | None = None  # the checksum written with it (None: written before kiln kept one)
    format: int | None = None  # read back: the format it has now (older ones are upgraded as they load)
    shards: Path | None = None  # a sharded resume: the folder the model and optimizer shards load from

    @property
    def config(self) -> dict[str, Any] | None:
        return self.meta.config if self.meta else None

    @property
    def data_info(self) -> dict[str, Any] | None:
        return self.meta.data_info if self.meta else None

    @property
    def world_size(self) -> int:
        return self.meta.world_size if self.meta else 1

    def payload(self) -> dict[str, Any]:
        """The flat dict saved to disk (its entries in this order; absent parts are left out)."""
        meta = self.meta
        parts: dict[str, Any] = {
            **({"config": meta.config, "data_info": meta.data_info, "world_size": meta.world_size,
                "global_batch_size": meta.global_batch_size} if meta else {}),
            "model": self.model, "raw_model": self.raw_model, "ema": self.ema, "optimizer": self.optimizer,
            "schedule": self.schedule, "scaler": self.scaler, "loop": self.loop.state_dict(),
            "running": self.running, **self.callbacks, "rng": self.rng, "rng_ranks": self.rng_ranks}
        return {key: value for key, value in parts.items() if value is not None}

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Checkpoint:
        """A loaded (and upgraded: kiln.core.state.load_checkpoint) payload, typed."""
        meta = RunMeta(payload["config"], payload.get("data_info") or {}, int(payload.get("world_size", 1)),
                       payload.get("global_batch_size")) if isinstance(payload.get("config"), dict) else None
        loop = LoopState()
        if "loop" in payload:
            loop.load_state_dict(payload["loop"])
        shards = payload.get("shards")
        return cls(
            model=payload.get("model", {}), meta=meta, loop=loop, optimizer=payload.get("optimizer"),
            schedule=payload.get("schedule"), scaler=payload.get("scaler"), running=payload.get("running"),
            raw_model=payload.get("raw_model"), ema=payload.get("ema"),
            callbacks={k: v for k, v in payload.items() if k not in _PARTS}, rng=payload.get("rng"),
            rng_ranks=payload.get("rng_ranks"), sha256=payload.get("sha256"), format=payload.get("format"),
            shards=Path(shards) if shards else None)

    def save(self, path: Path) -> None:
        """Atomically, with a checksum; a `.dcp` path is a sharded checkpoint (every rank calls this together)."""
        save_checkpoint(path, self.payload())


def read_checkpoint(path: Path | str) -> Checkpoint:
    """A checkpoint file, or a sharded checkpoint's folder consolidated, checked and typed."""
    return Checkpoint.of(load_checkpoint(path))
