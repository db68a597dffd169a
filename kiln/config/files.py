"""Config files: reading (with `base:` chains), merging layers, command-line overrides, loading and saving."""

from __future__ import annotations

import copy
import difflib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from kiln.config.describe import explain
from kiln.config.root import Config
from kiln.config.task_sections import TASK_CONFIGS, TASK_LOSSES, OwnTaskConfig
from kiln.core.devices import DEVICE_TYPES
from kiln.core.errors import KilnError

log = logging.getLogger("kiln")


@dataclass(frozen=True)
class DeviceProfile:
    """A file's settings for one kind of device (`on_device: {cpu: {data: {batch_size: 256}}}`): applied over
    that file (and its bases) when the run uses that device, so a file that extends it, and the command line,
    still win."""

    file: Path
    device: str
    values: dict[str, Any]


def read_file(path: Path, chain: tuple[Path, ...] = (), device: str | None = None,
              profiles: list[DeviceProfile] | None = None) -> dict[str, Any]:
    """Read one YAML/JSON config file, merging its `base:` chain (paths relative to the file) and applying the
    `on_device` profiles for `device` (none when it is None); `profiles` collects every profile of the chain."""
    path = Path(path)
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise KilnError(f"the base: chain of config files loops: {cycle}; remove the base: that points back")
    if not path.is_file():
        from kiln.core.shipped import missing_hint

        raise KilnError(f"config file not found: {path}" + ("" if chain else missing_hint(path)))
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise KilnError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise KilnError(f"{path} must hold a mapping of config sections, not {type(raw).__name__}")
    if isinstance(raw.get("code_dir"), str):  # relative to the file that says it, wherever kiln runs
        raw["code_dir"] = str((path.parent / raw["code_dir"]).resolve())
    base = raw.pop("base", None)
    own = _device_profiles(path, raw.pop("on_device", None))
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise KilnError(f"{path}: base: must be the path of another config file, not {base!r}")
        raw = deep_merge(read_file(path.parent / base, (*chain, path.resolve()), device, profiles), raw)
    for profile in own:
        if profiles is not None:
            profiles.append(profile)
        if profile.device == device:
            raw = deep_merge(raw, profile.values)
    return raw


def _device_profiles(path: Path, section: Any) -> list[DeviceProfile]:
    if section is None:
        return []
    if not isinstance(section, dict):
        raise KilnError(f"{path}: on_device must map a device type ({', '.join(DEVICE_TYPES)}) to settings, e.g. "
                        "on_device: {cpu: {data: {batch_size: 256}}}")
    out = []
    for device, values in section.items():
        if device not in DEVICE_TYPES:
            close = ["cuda"] if str(device).lower().startswith("gpu") else \
                difflib.get_close_matches(str(device), DEVICE_TYPES, n=1, cutoff=0.3)
            raise KilnError(f"{path}: on_device.{device}: not a device type; use {', '.join(DEVICE_TYPES)}"
                            + (f" (did you mean {close[0]}?)" if close else ""))
        if not isinstance(values, dict):
            raise KilnError(f"{path}: on_device.{device} must be a mapping of settings, not {values!r}")
        values = nest(flatten(values))  # `data.batch_size: 256` and `data: {batch_size: 256}` alike
        if "device" in (values.get("trainer") or {}) or "on_device" in values or "base" in values:
            raise KilnError(f"{path}: on_device.{device} cannot set trainer.device, base or on_device (the device "
                            "chooses the profile)")
        out.append(DeviceProfile(path, str(device), values))
    return out


# Keys that say the same thing in two forms: one set by the later layer (a derived file, the command line) replaces
# the other of the earlier one, so `optim.lr=0.05` on a config that uses optim.lr_base runs at 0.05.
ALTERNATIVES = (("lr", "lr_base"),)


def deep_merge(base: dict[str, Any], over: dict[str, Any], *, root: bool = True) -> dict[str, Any]:
    """Merge `over` into `base` key by key. When `over` switches a component to another `name`, the base's
    `args` belong to the old component and are dropped rather than merged (and when it switches the task, the
    base's settings the new task does not have); a key of ALTERNATIVES in `over` drops its other form from
    `base`."""
    out = copy.deepcopy(base)
    if root and isinstance(over.get("task"), dict) and isinstance(out.get("task"), dict):
        out["task"] = _switched_task(out["task"], over["task"])
    if "name" in over and "name" in out and over["name"] != out["name"]:
        out.pop("args", None)
    for a, b in ALTERNATIVES:
        for given, other in ((a, b), (b, a)):
            if given in over and given not in base and over.get(other) is None:
                out.pop(other, None)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, root=False)
        elif isinstance(value, dict) and value and isinstance(out.get(key), list) and all(
                str(k).isdigit() for k in value):  # `model.args.channels.0=16`: one element of a list
            out[key] = _set_items(out[key], value, key)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _switched_task(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """The base's task section for `over`'s task: a switch of task.name leaves out the settings only the old task
    has (`task.name=multilabel` on a multiclass config with label_smoothing), and a built-in loss of the old task."""
    new, old = over.get("name"), base.get("name", "multiclass")
    if new == old or not isinstance(new, str) or (new not in TASK_CONFIGS and ":" not in new):
        return base
    schema = TASK_CONFIGS[new] if new in TASK_CONFIGS else OwnTaskConfig  # package.module:Class: a task of yours
    own = set(schema.model_fields)
    if base.get("loss") in TASK_LOSSES.get(old, ()):  # the user's own loss (package.module:function) stays
        own.discard("loss")
    dropped = sorted(k for k in base if k not in own)
    if dropped:
        log.info("task.name=%s: leaving out the %s settings of the config it overrides (%s)", new, old,
                 ", ".join(f"task.{k}" for k in dropped))
    return {k: v for k, v in base.items() if k in own}


def _set_items(items: list[Any], values: dict[str, Any], key: str) -> list[Any]:
    out = copy.deepcopy(items)
    for index, value in values.items():
        if int(index) >= len(out):
            raise KilnError(f"{key}.{index}: {key} has {len(out)} elements (indices 0..{len(out) - 1})")
        out[int(index)] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ["optim.lr=0.05", "trainer.epochs=3"] into a nested dict; values are parsed as YAML."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise KilnError(f"override {item!r} is not of the form key.path=value (e.g. optim.lr=0.05)")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            values[key.strip()] = text
    return nest(values)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1} (the inverse of `nest`; empty dicts stay values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 0.1} -> {"optim": {"lr": 0.1}}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise KilnError(f"{key!r} conflicts with another value given for {part!r}")
        node[parts[-1]] = value
    return out


def build_config(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise KilnError(explain(e)) from None


def load_config(path: Path | str | None, overrides: Sequence[str] = (), base: dict[str, Any] | None = None) -> Config:
    """Load a config file (or start from `base`, e.g. a run's saved config) and apply overrides. A file's
    `on_device` profile for the device this run uses is applied (every profile is validated on any machine)."""
    if path is not None:
        from kiln.core.shipped import resolve

        path = resolve(path)  # a file path, else a shipped config's name (kiln train fashion_mnist)
    given = parse_overrides(list(overrides))
    if path is None:
        cfg = build_config(with_command_line(copy.deepcopy(base or {}), given))
    else:
        raw, profiles, device = read_on_this_device(Path(path), given)
        cfg = build_config(with_command_line(raw, given))
        ran, asked = flatten(cfg.model_dump(mode="json")), flatten(given)
        cfg._on_device = {key: value for p in profiles if p.device == device
                          for key, value in flatten(p.values).items() if ran.get(key) == value and key not in asked}
        cfg._device = device or ""
    if cfg.code_dir is not None:
        _import_from(cfg.code_dir)
    return cfg


def read_on_this_device(path: Path, given: dict[str, Any]) -> tuple[dict[str, Any], list[DeviceProfile], str | None]:
    """The file's layers merged, with the `on_device` profiles for the device a run of it (with the command
    line's `given` values) uses: (raw config, every profile of the chain, that device type or None when the chain
    has no profile). Every profile is validated, so a mistake in the GPU profile is reported on a laptop too."""
    profiles: list[DeviceProfile] = []
    raw = read_file(path, profiles=profiles)
    if not profiles:
        return raw, [], None
    cfg = build_config(with_command_line(raw, given))
    for profile in profiles:
        try:
            Config.model_validate(with_command_line(deep_merge(raw, profile.values), given))
        except ValidationError as e:
            raise KilnError(f"{profile.file}: on_device.{profile.device}: {explain(e)}") from None
    from kiln.core.devices import device_type

    device = device_type(cfg.trainer.device)
    if any(p.device == device for p in profiles):
        raw = read_file(path, device=device)
    return raw, profiles, device


def with_command_line(raw: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A file's settings `raw` with the command line's `given` merged over them — the one merge of overrides, for
    `kiln train`, cv, tune and test alike. trainer.epochs (or a step budget) set on the command line runs: a step
    floor or budget from the file (trainer.min_steps / max_steps, which would otherwise decide the epochs) yields,
    and the console says so."""
    merged = deep_merge(raw, given)
    trainer, asked = merged.get("trainer") or {}, given.get("trainer") or {}
    if not isinstance(trainer, dict) or not isinstance(asked, dict):
        return merged
    for key in ("min_steps", "max_steps"):
        if key in asked or trainer.get(key) is None or not {"epochs", "min_steps", "max_steps"} & set(asked):
            continue
        given_key = next(k for k in ("epochs", "min_steps", "max_steps") if k in asked)
        logging.getLogger("kiln").warning(
            "trainer.%s=%s from the command line runs: the config's trainer.%s=%s yields (set it on the command "
            "line too to keep it)", given_key, asked[given_key], key, trainer[key])
        trainer[key] = None
    return merged


def _import_from(folder: Path) -> None:
    import sys

    if not Path(folder).is_dir():
        raise KilnError(f"code_dir={folder} is not a folder (it is relative to the config file that sets it)")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


RESOLVED_HEADER = "# resolved by kiln for this run:"
DERIVED = "derived from "


def to_yaml(cfg: Config, resolved: dict[str, str] | None = None) -> str:
    """The config as YAML; `resolved`: values kiln derived for this run (key -> how), appended as comments so the
    file still loads as a config."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    if resolved:
        text += RESOLVED_HEADER + "\n" + "".join(f"#   {k}: {v}\n" for k, v in resolved.items())
    return text


def recorded_derivations(text: str) -> dict[str, str]:
    """The `key: derived from ...` comments `to_yaml` wrote: which values of a saved config kiln derived."""
    _, found, comments = text.partition(RESOLVED_HEADER)
    out = {}
    for line in comments.splitlines() if found else []:
        key, _, how = line.removeprefix("#").strip().partition(": ")
        if how.startswith(DERIVED):
            out[key] = how
    return out


def resolved_values(cfg: Config, world_size: int = 1) -> dict[str, str]:
    """What kiln derives from the config for a run of `world_size` processes, for config.yaml's comments."""
    out: dict[str, str] = {}
    if profile_summary(cfg):
        out[f"on_device.{cfg._device}"] = profile_summary(cfg)
    if cfg.optim.lr_base is not None:
        batch = cfg.data.batch_size * cfg.trainer.accumulate * world_size
        out["optim.lr"] = (f"{cfg.optim.resolved_lr(batch):.6g} (lr_base {cfg.optim.lr_base:g} per "
                           f"{cfg.optim.lr_base_size}, {cfg.optim.scaling()}-scaled to the global batch {batch})")
    return out



def profile_summary(cfg: Config) -> str:
    """`data.batch_size=256, trainer.epochs=12 (the config's on_device.cpu settings; …)`, for the log and
    config.yaml; empty when no profile was applied."""
    if not cfg._on_device:
        return ""
    values = ", ".join(f"{k}={v}" for k, v in cfg._on_device.items())
    return f"{values} (the config's on_device.{cfg._device} settings; a value given on the command line wins)"


def with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """`cfg` with command-line style overrides applied. What `cfg` left unset stays unset (not its default written
    out as if given), so what kiln derives later — a pretrained model's image size, the monitors — still applies."""
    return load_config(None, overrides, base=cfg.model_dump(mode="json", exclude_unset=True))


def resolve_config(config: Path | str | dict[str, Any] | Config, *overrides: str | dict[str, Any]) -> Config:
    """A config from Python, as `kiln config` shows it (the monitors that follow the task filled in): `config` a
    file, a shipped config's name, a dict or a `Config`; `overrides` "a.b=c" strings or dicts (nested, or dotted
    keys), applied in order as the command line's are."""
    from kiln.config.root import with_default_monitors

    given = override_strings(overrides)
    if isinstance(config, Config):
        cfg = with_overrides(config, given)
    elif isinstance(config, dict):
        cfg = load_config(None, given, base=config)
    elif isinstance(config, (str, Path)):
        cfg = load_config(config, given)
    else:
        raise KilnError(f"a config is a file path, a shipped config's name, a dict or a kiln Config, not "
                        f"{type(config).__name__}")
    return with_default_monitors(cfg)


def override_strings(overrides: Sequence[str | dict[str, Any]]) -> list[str]:
    """Overrides as the command line writes them: "a.b=c" strings kept, dicts flattened to key=JSON (which YAML
    reads back as the same value)."""
    import json

    out: list[str] = []
    for item in overrides:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out += [f"{key}={json.dumps(value)}" for key, value in flatten(item).items()]
        else:
            raise KilnError(f"an override is a 'key.path=value' string or a dict, not {type(item).__name__}: {item!r}")
    return out
