"""kiln: config-driven PyTorch training with exact resume and clear errors.

From Python: `kiln.train`, `kiln.load(...).predict`, `kiln.config`, `kiln.cv`, `kiln.tune` and `kiln.KilnError`
(see kiln.api). They load on first use, so `import kiln` and the `kiln` command start without torch."""

import sys
import types
from typing import Any

__version__ = "0.1.0"
__all__ = ["ExportedModel", "History", "KilnError", "Model", "Run", "__version__", "config", "cv", "load", "train",
           "tune"]

_API = ("ExportedModel", "History", "Model", "Run", "cv", "load", "tune")


def train(config: Any = None, *overrides: Any, **options: Any) -> Any:
    """Train a config from Python: see kiln.api.train (returns a kiln.api.Run)."""
    from kiln import api

    return api.train(config, *overrides, **options)


def __getattr__(name: str) -> Any:
    if name in _API:
        from kiln import api

        return getattr(api, name)
    if name == "KilnError":
        from kiln.core.errors import KilnError

        return KilnError
    if name == "config":  # the package kiln.config, callable: kiln.config(CONFIG, *overrides)
        import kiln.config

        return kiln.config
    raise AttributeError(f"module 'kiln' has no attribute {name!r}")


class _Kiln(types.ModuleType):
    """`kiln.train` names both the engine package (kiln/train/) and the API's function. Importing the package
    would make the name the package; the function keeps it, and the package is imported as it always is
    (`from kiln.train import session`; it is sys.modules["kiln.train"]). `kiln.config`, the other such name, is a
    callable package instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Kiln
