"""kiln: config-driven PyTorch training with exact resume and clear errors.

From Python: `kiln.train`, `kiln.load(...).predict`, `kiln.config`, `kiln.cv`, `kiln.tune` and `kiln.KilnError`
(see kiln.api). They load on first use, so `import kiln` and the `kiln` command start without torch."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["History", "KilnError", "Model", "Run", "__version__", "config", "cv", "load", "train", "tune"]

_API = ("History", "Model", "Run", "cv", "load", "train", "tune")


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
