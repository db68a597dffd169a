"""What a config's `package.module:Name` may resolve to. A config file, and so any run folder someone hands you,
names code: kiln imports the module (its top-level code runs: that much a run folder is trusted with) and then
accepts only what the key is for — a subclass of the expected base class, or a plain function defined in the
user's own code, never one from the standard library or an installed package. Nothing is called before that
check."""

from __future__ import annotations

import difflib
import importlib
import inspect
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from kiln.core.errors import KilnError


def names_code(name: str) -> bool:
    """Whether a config value names the user's own code (`package.module:Name`) rather than one of kiln's names or
    a library's (`torchvision:NAME` is a library's: ask kiln.models.hub first where both may appear)."""
    return ":" in name


def resolve(key: str, spec: str, base: type | None, *, functions: bool) -> Any:
    """`spec` ("package.module:Name") for config key `key`: a subclass of `base`, or (with `functions`) a function
    from the user's own code."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise KilnError(f"{key}={spec!r}: cannot import module {module_name!r} ({e}); is it installed or on "
                        "PYTHONPATH?") from None
    if not hasattr(module, attr):
        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=1, cutoff=0.6)
        raise KilnError(f"{key}={spec!r}: module {module_name!r} has no attribute {attr!r}"
                        + (f" — did you mean {module_name}:{close[0]}?" if close else ""))
    obj = getattr(module, attr)
    if base is not None and isinstance(obj, type) and issubclass(obj, base):
        return obj
    if functions and inspect.isfunction(obj) and is_users_code(obj):
        return obj
    kinds = [f"a {base.__module__}.{base.__qualname__} subclass"] if base is not None else []
    if functions:
        kinds.append("a function defined in your own code (not in the standard library or a package)")
    accepted = " or ".join(kinds)
    raise KilnError(f"{key}={spec!r} is {_describe(obj)}; kiln only accepts {accepted} here, and did not call it")


def is_users_code(fn: Callable[..., Any] | type) -> bool:
    """Defined in a file outside the Python installation's standard library and site-packages."""
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:  # built-in
        return False
    if path is None:
        return False
    file = Path(path).resolve()
    paths = sysconfig.get_paths()
    roots = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return not any(file.is_relative_to(root) for root in roots)


def _describe(obj: Any) -> str:
    if inspect.isclass(obj):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        where = getattr(obj, "__module__", None) or "a built-in module"
        return f"{type(obj).__name__} {getattr(obj, '__qualname__', obj)!s} from {where}"
    return f"a {type(obj).__name__}, not a class or function"


def torch_class(key: str, name: str, module: ModuleType, base: type, own: tuple[str, ...] = ()) -> type:
    """`name` as a class of `module` (`Adam`, `torch.optim:Adam`) or of the user's code (`pkg.mod:Class`); `own`:
    kiln's names for the same key, listed in the message."""
    prefix = module.__name__ + ":"
    short = name[len(prefix):] if name.startswith(prefix) else name
    if ":" not in short:
        cls = getattr(module, short, None)
        if isinstance(cls, type) and issubclass(cls, base):
            return cls
        valid = sorted(n for n in dir(module) if isinstance(getattr(module, n), type)
                       and issubclass(getattr(module, n), base) and getattr(module, n) is not base and n[0] != "_")
        same = [v for v in valid if v.lower() == short.lower()]
        close = same or difflib.get_close_matches(short, [*own, *valid], n=1)
        kiln_names = f"one of kiln's ({', '.join(own)}) nor " if own else ""
        raise KilnError(f"{key}={name!r} is {'neither ' if own else ''}{kiln_names}a {module.__name__} class"
                        f"{f' — did you mean {close[0]}?' if close else ''} Valid {module.__name__} classes: "
                        f"{', '.join(valid)}; or your own as package.module:Class")
    return resolve(key, name, base, functions=False)
