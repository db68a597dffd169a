"""How the model is spread over the processes (`trainer.strategy`): one owner for what DDP and FSDP do differently.
The run plan chooses a `Strategy` (RunPlan.strategy), one subclass per kind:

- single: one process, the plain model.
- ddp: every rank holds the whole model; gradients are all-reduced (DistributedDataParallel).
- fsdp: PyTorch's FSDP2 (`fully_shard`): every block (transformer layers, ResNet/ConvNeXt stages' blocks, or the
  classes named in `trainer.fsdp.blocks`) and the root are sharded, so each rank holds 1/N of the parameters,
  gradients and optimizer state; a block's parameters are gathered only while it runs.

Checkpoints under FSDP are folders of shards (kiln.core.sharded; `trainer.fsdp.checkpoint: full` gathers one
file instead): every rank writes its own. An FSDP resume loads them straight into its shards, re-laid by torch
when the number of processes changed; everything else (`kiln test`, `predict`, `export`, fine-tuning, a resume
without FSDP) reads them consolidated, like any checkpoint. The optimizer state of an FSDP run is keyed by
parameter name (torch's distributed state-dict format); it loads into any strategy.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.config import Config, TrainerConfig
from kiln.core import dist
from kiln.core.checkpoint import Checkpoint, read_checkpoint
from kiln.core.errors import KilnError
from kiln.core.state import load_weights, unwrap
from kiln.train.ema import WeightAverage

log = logging.getLogger("kiln")
# Repeated units a model is built of, by class name: torch's and transformers' layers, torchvision's and timm's
# blocks. The outermost match is a block (a block inside a block is not sharded on its own).
BLOCK_SUFFIXES = ("Layer", "Block", "Bottleneck", "BasicBlock", "Stage")


def resolve(cfg: TrainerConfig, world_size: int) -> str:
    """single | ddp | fsdp for this launch (auto = ddp; on one process every strategy is the plain model)."""
    if world_size <= 1:
        return "single"
    return "fsdp" if cfg.strategy == "fsdp" else "ddp"


def check(cfg: Config, device: torch.device) -> None:
    """What FSDP does not do (yet), refused before anything is built."""
    trainer = cfg.trainer
    if trainer.fsdp.cpu_offload and (trainer.strategy != "fsdp" or device.type != "cuda"):
        raise KilnError(f"trainer.fsdp.cpu_offload keeps FSDP's sharded parameters in host memory between uses "
                        f"of a GPU: it needs trainer.strategy=fsdp on CUDA (this run: strategy "
                        f"{trainer.strategy}, device {device.type})")
    if trainer.strategy != "fsdp":
        return
    if trainer.precision == "16":
        raise KilnError("trainer.precision=16 needs a gradient scaler, which kiln does not use with FSDP: use "
                        "trainer.precision=bf16 (or 32) with trainer.strategy=fsdp")
    if trainer.sync_batchnorm:
        raise KilnError("trainer.sync_batchnorm is for DDP; with trainer.strategy=fsdp leave it off")


def blocks(model: nn.Module, names: list[str] | None) -> list[nn.Module]:
    """The modules sharded (and checkpointed) one by one: of the classes `names`, else the model's repeated
    units by class name; outermost first, never one inside another."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(outer + ".") for outer, _ in found):
            continue
        cls = type(module).__name__
        if (cls in names) if names else (cls.endswith(BLOCK_SUFFIXES) and any(True for _ in module.parameters())):
            found.append((name, module))
    if names and not found:
        classes = sorted({type(m).__name__ for m in model.modules()})
        raise KilnError(f"trainer.fsdp.blocks={names}: the model has no module of these classes; its classes: "
                        f"{', '.join(classes)}")
    return [module for _, module in found]


def checkpoint_activations(model: nn.Module, cfg: TrainerConfig) -> None:
    """trainer.activation_checkpointing: each block's activations are recomputed in the backward pass instead
    of kept (less memory, one more forward per block). Any strategy."""
    from torch.distributed._composable import checkpoint

    found = blocks(model, cfg.fsdp.blocks)
    if not found:
        raise KilnError("trainer.activation_checkpointing: the model has no blocks to checkpoint (name their "
                        "classes in trainer.fsdp.blocks)")
    for block in found:
        checkpoint(block)
    log.info("activation checkpointing: %d blocks", len(found))


def shard(model: nn.Module, cfg: TrainerConfig, precision: str, device: torch.device) -> nn.Module:
    """FSDP2 over every process: each block, then the root. Before the optimizer is built (it must hold the
    sharded parameters)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.current().world_size,))
    low = {"bf16": torch.bfloat16}.get(precision)
    options: dict[str, Any] = {
        "mesh": mesh, "reshard_after_forward": cfg.fsdp.reshard_after_forward,
        "mp_policy": MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32 if low else None),
        "offload_policy": CPUOffloadPolicy() if cfg.fsdp.cpu_offload else OffloadPolicy()}
    found = blocks(model, cfg.fsdp.blocks)
    for block in found:
        fully_shard(block, **options)
    fully_shard(model, **options)
    model.kiln_reshard_after_forward = cfg.fsdp.reshard_after_forward  # type: ignore[assignment]  # see whole()
    log.info("fsdp: %d blocks and the root sharded over %d processes%s", len(found), dist.current().world_size,
             f", parameters in {precision}" if low else "")
    return model


class Strategy:
    """`single`: one process, the plain model. The run's choice of strategy (trainer.strategy, resolved for its
    number of processes: `of`) says how the model is prepared before its optimizer is built, wrapped for training,
    how its gradients are synchronised, and how its checkpoints are written and read; each kind is one subclass.
    Evaluation alone asks the model (`whole`), since `kiln test` and `predict` evaluate models no strategy made."""

    name = "single"
    shards = False  # each rank holds only a shard of the parameters (FSDP)

    def __init__(self, cfg: TrainerConfig):
        self.cfg = cfg

    @staticmethod
    def of(cfg: TrainerConfig, world_size: int) -> Strategy:
        return STRATEGIES[resolve(cfg, world_size)](cfg)

    def prepare(self, model: nn.Module, precision: str, device: torch.device) -> nn.Module:
        """Before the optimizer is built (it must hold the parameters the run trains): activation checkpointing."""
        if self.cfg.activation_checkpointing:
            checkpoint_activations(model, self.cfg)
        return model

    def wrap(self, model: nn.Module, device: torch.device, frozen: bool) -> nn.Module:
        """For training, once the weights are in place (`frozen`: some parameters are frozen): torch.compile."""
        if self.cfg.compile:
            return torch.compile(model, mode=None if self.cfg.compile == "default" else self.cfg.compile)  # type: ignore[return-value]
        return model

    def gradient_sync(self, model: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        """No gradient communication on the micro-steps of an accumulation that do not step the optimizer (a
        DDP-wrapped model's no_sync; a plain model has none to skip)."""
        no_sync = None if sync else getattr(model, "no_sync", None)
        return no_sync() if no_sync is not None else nullcontext()

    # -- checkpoints
    @property
    def saves_shards(self) -> bool:
        """Are this run's checkpoints folders of shards?"""
        return False

    def model_state(self, model: nn.Module, sharded: bool = False) -> dict[str, Any]:
        """The model's full state dict (`sharded`: this rank's shards, where the model is sharded)."""
        return unwrap(model).state_dict()

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                        sharded: bool = False) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_model_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        """A full state dict into the model (under FSDP every rank passes it and keeps its shard)."""
        load_weights(unwrap(model), state, "the checkpoint")

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        """torch's own format (parameters numbered), or an FSDP run's (parameters named)."""
        if _named(state):
            _set_optimizer_state(model, optimizer, state)
        else:
            optimizer.load_state_dict(state)

    def training_weights(self, model: nn.Module, ema: WeightAverage | None
                         ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
        """What a training checkpoint holds of the model (every rank at once; shards where they are saved):
        (model, raw_model, ema) — with trainer.ema the model is the average, raw_model the weights themselves."""
        shards = self.saves_shards
        if ema is None:
            return self.model_state(model, shards), None, None
        with averaged(model, ema) as average:
            weights = self.model_state(average, shards)
            if shards and average is model:  # views of the shards, which get their own weights back
                weights = {k: v.clone() for k, v in weights.items()}
        return weights, self.model_state(model, shards), ema.state_dict()

    def restore_training_weights(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                                 ema: WeightAverage | None, state: Checkpoint) -> None:
        """A training checkpoint's model, optimizer and weight average back into this run's (`training_weights`
        in reverse); a checkpoint saved with EMA resumed without it trains on from the raw weights."""
        assert state.shards is None, "shards load into a sharded model (FullyShardedDataParallel)"
        if ema is not None and state.raw_model is not None:
            assert state.ema is not None, "saved with trainer.ema: the average's own state is there too"
            self.load_model_state(model, state.raw_model)
            ema.load_average(model, state.model)
            ema.load_state_dict(state.ema)
        else:
            self.load_model_state(model, state.raw_model if state.raw_model is not None else state.model)
        assert state.optimizer is not None, "a training checkpoint"
        self.load_optimizer_state(model, optimizer, state.optimizer)

    def resume_state(self, path: Path) -> Checkpoint:
        """The checkpoint a resume starts from, whole."""
        return read_checkpoint(path)

    def load_weights(self, model: nn.Module, path: Path) -> Checkpoint:
        """A checkpoint's weights into the model (a folder of shards is read consolidated); the checkpoint is
        returned (its epoch, checksum, ...)."""
        state = read_checkpoint(path)  # on the CPU: only the weights go to the device, copied into the model
        load_weights(unwrap(model), state.model, path)
        return state


class DataParallel(Strategy):
    """`ddp`: every rank holds the whole model; gradients are all-reduced (DistributedDataParallel)."""

    name = "ddp"

    def prepare(self, model: nn.Module, precision: str, device: torch.device) -> nn.Module:
        if self.cfg.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return super().prepare(model, precision, device)

    def wrap(self, model: nn.Module, device: torch.device, frozen: bool) -> nn.Module:
        """DistributedDataParallel (frozen parameters need find_unused_parameters), then torch.compile."""
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=frozen)
        return super().wrap(model, device, frozen)


class FullyShardedDataParallel(Strategy):
    """`fsdp`: every block and the root sharded over the processes (FSDP2); checkpoints are folders of shards
    (or, with trainer.fsdp.checkpoint: full, one gathered file), read straight into each rank's shards."""

    name = "fsdp"
    shards = True

    def prepare(self, model: nn.Module, precision: str, device: torch.device) -> nn.Module:
        return shard(super().prepare(model, precision, device), self.cfg, precision, device)

    def gradient_sync(self, model: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        return nullcontext() if sync else _fsdp_no_sync(unwrap(model))

    @property
    def saves_shards(self) -> bool:
        return self.cfg.fsdp.checkpoint == "sharded"

    def model_state(self, model: nn.Module, sharded: bool = False) -> dict[str, Any]:
        """Gathered by every rank together (rank 0 gets it, on the CPU), or with `sharded` this rank's shards (no
        communication)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(unwrap(model), options=StateDictOptions() if sharded else _options(cpu_offload=True))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                        sharded: bool = False) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(unwrap(model), optimizer,
                                        options=StateDictOptions() if sharded else _options(cpu_offload=True))

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        """Either format into the shards: a numbered state (DDP, one process) is keyed by parameter names first."""
        _set_optimizer_state(model, optimizer, state if _named(state) else _by_name(model, optimizer, state))

    def resume_state(self, path: Path) -> Checkpoint:
        """A sharded checkpoint is read but for its shards: they load into the sharded model later, from `shards`."""
        if path.is_dir():
            from kiln.core import sharded

            return Checkpoint.of({**sharded.read_state(path), "shards": str(path)})
        return read_checkpoint(path)

    def restore_training_weights(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                                 ema: WeightAverage | None, state: Checkpoint) -> None:
        """A folder of shards straight into this rank's (every rank together), or a whole checkpoint."""
        if state.shards is None:
            super().restore_training_weights(model, optimizer, ema, state)
            return
        saved = state.ema  # saved with trainer.ema: "model" is the average
        self.load_shards(model, optimizer, Path(state.shards), weights="raw_model" if saved is not None else "model",
                         average=ema if saved is not None else None)
        if saved is not None and ema is not None:
            ema.load_state_dict(saved)

    def load_weights(self, model: nn.Module, path: Path) -> Checkpoint:
        """From a folder of shards straight into each rank's own (every rank together)."""
        if not path.is_dir():
            return super().load_weights(model, path)
        from kiln.core import sharded

        state = Checkpoint.of(sharded.read_state(path))
        self.load_shards(model, None, path)
        return state

    def load_shards(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, path: Path,
                    weights: str = "model", average: Any = None) -> None:
        """Every rank, together: a sharded checkpoint's state straight into this rank's shards, whatever number
        of processes wrote it — the model's weights from the checkpoint's `weights` entry ("raw_model" when it was
        saved with trainer.ema), the optimizer's, and with `average` (a ShardedEMA) the weight average from
        "model"."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        from kiln.core import sharded

        own = self.model_state(model, sharded=True)  # views of the parameters' shards: torch loads into them
        shards: dict[str, Any] = {weights: own}
        if average is not None:
            shards["model"] = {k: v.clone() for k, v in own.items()}
        if optimizer is not None:
            shards["optimizer"] = self.optimizer_state(model, optimizer, sharded=True)
        sharded.load_into(path, shards)
        set_model_state_dict(unwrap(model), shards[weights])
        if average is not None:
            average.load_average(model, shards["model"])
        if optimizer is not None:
            set_optimizer_state_dict(unwrap(model), optimizer, shards["optimizer"])


@contextmanager
def averaged(model: nn.Module, ema: WeightAverage | None) -> Iterator[nn.Module]:
    """The model with the weight average swapped in while inside (trainer.ema), else the model itself."""
    if ema is None:
        yield model
        return
    with ema.applied(model) as average:
        yield average


STRATEGIES: dict[str, type[Strategy]] = {"single": Strategy, "ddp": DataParallel, "fsdp": FullyShardedDataParallel}


def is_sharded(model: nn.Module) -> bool:
    """Sharded by FSDP? For evaluation (`whole`), which also serves models no strategy prepared: importing FSDP
    costs a second, and a model can only be sharded once `shard` has imported it."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(unwrap(model), fsdp.FSDPModule)


@contextmanager
def _fsdp_no_sync(model: Any) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


@contextmanager
def whole(model: nn.Module) -> Iterator[None]:
    """Evaluation and prediction: under FSDP every rank gathers the full parameters once (together) and keeps
    them while it runs its own shard of the data — ranks with one batch more or less never wait on each other."""
    if not is_sharded(model):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    root = unwrap(model)
    parts = [m for m in root.modules() if isinstance(m, FSDPModule)]
    inner = [m for m in parts if m is not root]
    for m in inner:
        m.set_reshard_after_forward(False, recurse=False)
    for m in parts:
        m.unshard()
    try:
        yield
    finally:
        for m in parts:
            m.reshard()
        for m in inner:
            m.set_reshard_after_forward(getattr(root, "kiln_reshard_after_forward", True), recurse=False)


def _options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def _named(state: dict[str, Any]) -> bool:
    """An optimizer state keyed by parameter names (torch's distributed format, as FSDP runs save it)?"""
    return (bool(state.get("state")) and isinstance(next(iter(state["state"])), str)) or \
        any(isinstance(p, str) for g in state.get("param_groups", []) for p in g["params"])


def _set_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(unwrap(model), optimizer, state, options=_options())


def _by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A numbered optimizer state (DDP, one process) keyed by parameter names instead: number i is the i-th
    parameter of the optimizer's groups, in order (the same names before and after sharding)."""
    names = {id(p): n for n, p in unwrap(model).named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    return {"state": {order[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]}
