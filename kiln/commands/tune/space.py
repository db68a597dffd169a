"""The tune config: which training config, which metric, which search space, which search method.

Each kind of parameter translates itself for both back ends (`optuna_value`, `ray_domain`), so the search space
is defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from kiln.config import (
    Section,
    better,
    build_config,
    deep_merge,
    nest,
    parse_overrides,
    read_file,
    read_on_this_device,
    watched,
    with_command_line,
    with_default_monitors,
)
from kiln.core.errors import KilnError


class FloatParam(Section):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    """Sample on a log scale (learning rates, weight decay)."""

    @model_validator(mode="after")
    def _ordered(self) -> "FloatParam":
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"needs low < high (and low > 0 with log), got {self.low}..{self.high}")
        return self

    def optuna_value(self, trial, key: str) -> float:
        return trial.suggest_float(key, self.low, self.high, log=self.log)

    def ray_domain(self, grid: bool = False):
        from ray import tune as rt

        return rt.loguniform(self.low, self.high) if self.log else rt.uniform(self.low, self.high)


class IntParam(Section):
    type: Literal["int"]
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "IntParam":
        if not self.low < self.high:
            raise ValueError(f"needs low < high, got {self.low}..{self.high}")
        return self

    def optuna_value(self, trial, key: str) -> int:
        return trial.suggest_int(key, self.low, self.high, step=self.step, log=self.log)

    def ray_domain(self, grid: bool = False):
        from ray import tune as rt

        return rt.lograndint(self.low, self.high + 1) if self.log else rt.qrandint(self.low, self.high, self.step)


class CategoricalParam(Section):
    type: Literal["categorical"] = "categorical"
    choices: list[Any] = Field(min_length=1)

    def optuna_value(self, trial, key: str) -> Any:
        return trial.suggest_categorical(key, self.choices)

    def ray_domain(self, grid: bool = False):
        from ray import tune as rt

        return rt.grid_search(self.choices) if grid else rt.choice(self.choices)


Param = FloatParam | IntParam | CategoricalParam


class TuneConfig(Section):
    base: Path
    """The training config to tune (relative to the tune file)."""
    name: str | None = None
    """Study name; runs go to <log.dir>/<name>/tune-<timestamp>/. Unset: the base config's name."""
    metric: str = ""
    """The metric to optimise, as logged per epoch (checked before the search starts). Unset: the base config's
    checkpoint monitor (val/acc, val/f1_micro or val/mae by task, unless the config sets another)."""
    mode: Literal["min", "max"] | None = None
    """Whether lower or higher is better. Unset: min for losses and errors (loss, mae, rmse), max for the rest."""
    trials: int = Field(20, gt=0)
    """Number of finished (complete or pruned) trials."""
    test_trials: bool = False
    """Test each complete trial's best checkpoint on the test split, so the summary shows test results beside
    each trial's parameters and speed (comparing models). The ranking stays by `metric`: choosing by the test
    split would make its score optimistic."""
    sampler: Literal["grid", "random", "tpe", "cmaes"] = "tpe"
    """grid (every combination of the listed values), random, tpe (Bayesian), cmaes."""
    pruner: Literal["none", "median", "asha", "hyperband"] = "none"
    """Stop hopeless trials early, judged on the metric after every epoch."""
    grace_epochs: int | None = Field(None, ge=1)
    """Epochs every trial runs before a pruner may stop it (ASHA's and Hyperband's smallest budget, the median
    rule's warm-up). Unset: a quarter of the trials' epochs, at least 1 — one epoch of a small, noisy dataset is
    too little to judge a trial by."""
    seed: int = 0
    """Seed of the sampler (each trial's training uses the base config's seed)."""
    space: dict[str, Param]
    """Config key -> {type: float|int|categorical, ...}, or a list of values (categorical; grid search)."""

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_categorical(cls, space: Any) -> Any:
        if isinstance(space, dict):
            return {k: {"type": "categorical", "choices": v} if isinstance(v, list) else v for k, v in space.items()}
        return space

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> "TuneConfig":
        if not self.space:
            raise ValueError("space is empty: name at least one config key to search")
        for key, p in self.space.items():
            choices = p.choices if isinstance(p, CategoricalParam) else []
            if any(isinstance(c, (list, dict)) for c in choices):
                raise ValueError(f"{key}: choices must be numbers, strings, booleans or null (the study database "
                                 "stores them); search list-valued settings through separate scalar keys, e.g. "
                                 "model.args.channels.0")
        if self.sampler == "grid":
            ranges = [k for k, v in self.space.items() if not isinstance(v, CategoricalParam)]
            if ranges:
                raise ValueError(f"grid search needs lists of values; {', '.join(ranges)} are ranges")
        return self

    def grace(self, epochs: int) -> int:
        """The epochs a trial of `epochs` runs before it may be pruned (never more than it runs)."""
        return min(epochs, self.grace_epochs or max(1, epochs // 4))

    def grid(self) -> dict[str, list[Any]]:
        return {k: v.choices for k, v in self.space.items() if isinstance(v, CategoricalParam)}


def load_tune_config(path: Path) -> TuneConfig:
    from pydantic import ValidationError

    from kiln.config import explain
    from kiln.core.shipped import missing_hint, resolve

    path = resolve(path)  # a file, else a shipped one by name (tune/fashion_mnist)
    if not Path(path).is_file():
        raise KilnError(f"tune config not found: {path}{missing_hint(path)}")
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise KilnError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or "base" not in raw:
        raise KilnError(f"{path} must name the training config to tune with `base: path/to/config.yaml`")
    raw["base"] = str((Path(path).parent / raw["base"]).resolve()) if not Path(raw["base"]).is_absolute() \
        else raw["base"]
    try:
        tune = TuneConfig.model_validate(raw)
    except ValidationError as e:
        raise KilnError(explain(e).replace("invalid config", f"invalid tune config {path}")) from None
    base = with_default_monitors(build_config(read_file(tune.base)))
    metric = tune.metric or watched(base.trainer.checkpoint)[0]  # what its runs keep
    return tune.with_values({"metric": metric, "mode": tune.mode or better(metric)})


def trial_config(base_raw: dict[str, Any], values: dict[str, Any]):
    """The base training config (already with command-line overrides) with one trial's values set."""
    return build_config(deep_merge(base_raw, nest(values)))


def base_raw(tune: TuneConfig, overrides: list[str]) -> dict[str, Any]:
    given = parse_overrides(overrides)
    raw = with_command_line(read_on_this_device(tune.base, given)[0], given)  # the base's settings for this machine
    build_config(raw)  # fail now, not in the first trial
    return raw
