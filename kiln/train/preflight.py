"""Checks a command runs on a validated config before anything heavy: before torch's libraries are imported, before
the data is scanned, before a run folder exists. The schema already checked names, types, kiln's models and their
arguments (so `kiln config` reports those too); here: the data's folder, a model of your own and its arguments
(importing your code, which imports torch), and that the pretrained weights are on this machine."""

from __future__ import annotations

from pathlib import Path

from kiln.config import Config
from kiln.core.errors import KilnError


def preflight(cfg: Config, *, resuming: bool = False) -> None:
    """Raise KilnError for a mistake that would otherwise surface after the data is read. `resuming`: the run's
    own config (its model was built before; only the data's location is checked). A config already checked in
    this process is not checked again (`kiln train` checks before torch loads, then the session it starts)."""
    if _CHECKED.get((id(cfg), resuming)) is cfg:
        return
    _check(cfg, resuming)
    _CHECKED.clear()
    _CHECKED[(id(cfg), resuming)] = cfg  # the config itself is kept, so its id is not reused by another


_CHECKED: dict[tuple[int, bool], Config] = {}


def _check(cfg: Config, resuming: bool) -> None:
    check_data_root(cfg)
    check_own_task(cfg)
    if cfg.log.remote:  # the store the run is mirrored to: reachable and writable before anything trains
        from kiln.core.storage import check_writable

        check_writable(cfg.log.remote)
    if not resuming:  # a resumed run's weights come from its checkpoint
        check_own_model(cfg)
        if cfg.model.pretrained is not None:  # weights missing on this machine: said before a cache is built
            from kiln.models.pretrained import check_available

            check_available(cfg.model)


def check_data_root(cfg: Config) -> None:
    from kiln.data.registry import own_files

    data = cfg.data
    what = own_files(data.name)  # the user's own files are found under data.root, and nowhere else
    if what is None or data.files:  # a registered dataset (searched in several places, kiln.data.registry), your
        return  # own Dataset, or files named one by one (data.files: local paths or URLs)
    if data.root is None:
        raise KilnError(f"data.name={data.name} needs data.root: the folder holding {what}")
    if not Path(data.root).is_dir():
        raise KilnError(f"data.root={data.root} is not a folder; data.name={data.name} reads {what} from it")


def check_own_model(cfg: Config) -> None:
    """model.name=pkg.mod:Class (or torchvision:NAME, timm:NAME): importable, a model, and taking model.args, before
    the data is read (kiln's own are checked by the schema)."""
    if ":" not in cfg.model.name:
        return
    from kiln.models.registry import check_args, resolve

    factory = resolve(cfg.model.name)
    try:
        check_args(cfg.model.name, factory, cfg.model.args)  # the same check construct() makes, before the data
    except KilnError:
        raise
    except (TypeError, ValueError):  # no signature to check against: construct() reports what the call says
        return


def check_own_task(cfg: Config) -> None:
    """task.name=pkg.mod:Class: importable, a kiln.tasks.Task, and taking task.args (with a did-you-mean for each
    argument it does not take, and the ones it needs and was not given), before the data is read."""
    from kiln.config import OwnTaskConfig

    if not isinstance(cfg.task, OwnTaskConfig):
        return
    import difflib
    import inspect

    from kiln.tasks import task_class

    name, args = cfg.task.name, cfg.task.args
    params = {k: p for k, p in list(inspect.signature(task_class(name)).parameters.items())[2:]  # (cfg, num_classes)
              if p.kind not in (inspect.Parameter.VAR_POSITIONAL,)}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    own = [k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [k for k in args if k not in own and not takes_any]
    if unknown:
        hints = [f"'{u}' (did you mean '{close[0]}'?)" if (close := difflib.get_close_matches(u, own, n=1, cutoff=0.6))
                 else repr(u) for u in unknown]
        raise KilnError(f"task {name} does not take {', '.join(hints)} in task.args — it accepts: "
                        f"{', '.join(own) or 'no arguments'}")
    needed = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k in own and k not in args]
    if needed:
        raise KilnError(f"task {name} needs {', '.join(needed)} in task.args (e.g. task.args.{needed[0]}=...)")
