"""Optimizers and learning-rate schedules, each built from its own config section."""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import torch
from torch import nn

from kiln.config import OptimConfig, ScheduleConfig
from kiln.core.errors import KilnError
from kiln.core.user_code import torch_class

log = logging.getLogger("kiln")


def param_groups(model: nn.Module, cfg: OptimConfig, head: str | None = None, lr: float | None = None
                 ) -> list[dict[str, Any]]:
    """Decay weights of linear/conv layers only (biases and normalisation weights, ndim <= 1, are not decayed);
    the backbone (everything but `head`) learns at lr x backbone_lr_mult. Frozen parameters are included:
    they have no gradient, so the optimizer skips them until they are unfrozen."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        in_head = head is None or name == head or name.startswith(head + ".")
        groups.setdefault((in_head, p.ndim > 1 or cfg.decay_norm_and_bias), []).append(p)
    return [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
             "lr": (cfg.lr if lr is None else lr) * (1.0 if in_head else cfg.backbone_lr_mult)}
            for (in_head, decay), params in sorted(groups.items())]


def build_optimizer(cfg: OptimConfig, model: nn.Module, device: torch.device, head: str | None = None,
                    lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer at the run's peak learning rate `lr` (the run plan's; unset: the config's own, lr_base
    unscaled)."""
    lr = cfg.resolved_lr(None) if lr is None else lr
    groups = param_groups(model, cfg, head if cfg.backbone_lr_mult != 1.0 else None, lr)
    # Fused kernels do the whole update in one launch on CUDA; foreach (the CPU default) batches it.
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **fast)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=cfg.betas, **fast)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, **fast)
    cls = torch_class("optim.name", cfg.name, torch.optim, torch.optim.Optimizer, ("sgd", "adam", "adamw"))
    return construct(cls, "optim", groups, lr=lr, **cfg.args)


KILN_SCHEDULES = ("none", "step", "cosine", "linear", "onecycle", "reduce_on_plateau")
WARMUP_SCHEDULES = ("cosine", "linear", "step")  # kiln's LambdaLR schedules, stepped per optimizer step
PER_STEP_SCHEDULERS = ("OneCycleLR", "CyclicLR")


def construct(cls: type, section: str, first: Any, **kwargs: Any) -> Any:
    """`cls(first, **kwargs)`, with arguments the constructor does not take named before anything runs."""
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise KilnError(f"{section}.args: {cls.__name__} takes no argument {', '.join(map(repr, unknown))}; its "
                        f"signature: {cls.__name__}{inspect.signature(cls)}")
    try:
        return cls(first, **kwargs)
    except (TypeError, ValueError) as e:
        raise KilnError(f"{section}: {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: "
                        f"{e}. Its signature: {cls.__name__}{inspect.signature(cls)}") from None


class Schedule:
    """The LR schedule. Stepped after every optimizer step, and once per epoch with the monitored metric."""

    def __init__(self, cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, *, epochs: int,
                 steps_per_epoch: int, monitor: str = "val/loss", monitor_mode: str = "min"):
        self.name, self.monitor = cfg.name, monitor
        total = max(1, epochs * steps_per_epoch)
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        self.impl: Any = None
        self.per_step = cfg.name in ("onecycle", *WARMUP_SCHEDULES)
        self.plateau = cfg.name == "reduce_on_plateau"
        if cfg.name not in KILN_SCHEDULES:
            cls = torch_class("schedule.name", cfg.name, torch.optim.lr_scheduler,
                              torch.optim.lr_scheduler.LRScheduler,  # ReduceLROnPlateau is one since torch 2.2
                              KILN_SCHEDULES)
            self.impl = construct(cls, "schedule", optimizer, **cfg.args)
            self.plateau = isinstance(self.impl, torch.optim.lr_scheduler.ReduceLROnPlateau)
            self.per_step = (cfg.interval or ("step" if cls.__name__ in PER_STEP_SCHEDULERS else "epoch")) == "step"
            if self.plateau and self.per_step:
                raise KilnError("schedule.interval=step does not suit ReduceLROnPlateau: it steps once per epoch, "
                                "with the monitored metric")
        elif cfg.name == "onecycle":
            max_lrs = [g["lr"] for g in optimizer.param_groups]
            self.impl = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total,
                                                            pct_start=onecycle_pct_start(cfg.pct_start, total))
        elif cfg.name == "reduce_on_plateau":
            self.impl = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max" if monitor_mode == "max" else "min",
                                                                   patience=cfg.patience, factor=cfg.factor)
        elif cfg.name in WARMUP_SCHEDULES:
            self.impl = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_factor(cfg, step, total, warmup, steps_per_epoch))

    def after_step(self) -> None:
        if self.impl is not None and self.per_step:
            self.impl.step()

    def after_epoch(self, metrics: dict[str, float]) -> None:
        if self.impl is None or self.per_step:
            return
        if self.plateau:
            self.impl.step(metrics[self.monitor])
        else:
            self.impl.step()

    def state_dict(self) -> dict[str, Any]:
        return self.impl.state_dict() if self.impl is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.impl is None:
            return
        if isinstance(self.impl, torch.optim.lr_scheduler.OneCycleLR):
            # A run resumed with more epochs keeps the new length (its LR curve is stretched from here on).
            state = {**state, "total_steps": self.impl.total_steps}
        self.impl.load_state_dict(state)


def onecycle_pct_start(pct_start: float, total: int) -> float:
    """OneCycleLR divides by (pct_start * total - 1): when the warm-up would end exactly on the first step
    (0.25 of 4 steps, 0.5 of 2) it raises ZeroDivisionError. Warm up over two steps instead."""
    if abs(pct_start * total - 1) < 1e-9:
        return 2 / total if total > 2 else pct_start / 2
    return pct_start


def lr_factor(cfg: ScheduleConfig, step: int, total: int, warmup: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak LR after `step` optimizer steps (cosine, linear and step schedules)."""
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "step":
        return cfg.gamma ** (step // (cfg.step_size * steps_per_epoch))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if cfg.name == "linear":  # transformers' get_linear_schedule_with_warmup, down to min_lr_ratio
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - progress)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
