"""kiln's model names and the arguments each takes, known without importing torch: read from the source of the
modules that register them (`@register_model` functions), so a config is checked in milliseconds — by `kiln
config` and before `kiln train` loads anything heavy. `MODELS` (kiln.models.registry) stays the one registry; a
test checks that both agree."""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# The modules whose @register_model functions are kiln's models (kiln.models imports the same ones).
MODEL_MODULES = ("vision.py", "text.py", "segmentation.py", "detection.py")

# Arguments kiln fills from the data; a user may set them, but they are not listed as the model's own.
DATA_ARGS = frozenset({"in_channels", "image_size", "num_classes", "vocab_size", "pad_id"})


@dataclass(frozen=True)
class ModelEntry:
    name: str
    params: tuple[str, ...]  # keyword arguments it takes, in order
    takes_any: bool  # it has **kwargs


@cache
def kiln_models() -> dict[str, ModelEntry]:
    """Every model kiln registers, by name."""
    entries: dict[str, ModelEntry] = {}
    for module in MODEL_MODULES:
        tree = ast.parse((Path(__file__).parents[1] / "models" / module).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(_is_register(d) for d in node.decorator_list):
                a = node.args
                params = tuple(p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs))
                entries[node.name] = ModelEntry(node.name, params, a.kwarg is not None)
    return entries


def _is_register(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Name) and decorator.id == "register_model"


def unknown_model(name: str) -> str:
    """The message for a model name kiln does not have: a did-you-mean across kiln's and torchvision's names."""
    known = sorted(kiln_models())
    library = {f"torchvision:{n}": n for n in torchvision_names()}
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or \
        [f for f, n in library.items() if n == name] or \
        [next(f for f, n in library.items() if n == c) for c in difflib.get_close_matches(name, list(library.values()),
                                                                                          n=1, cutoff=0.8)]
    hint = f" — did you mean '{close[0]}'? kiln's models:" if close else " — kiln's models:"
    return (f"unknown model '{name}'{hint} {', '.join(known)}; any torchvision classifier as torchvision:NAME, "
            "a timm model as timm:NAME (`kiln models` lists them), or your own as 'package.module:ClassName'")


@cache
def torchvision_names() -> tuple[str, ...]:
    """torchvision's classification, semantic segmentation and detection builders, read from its source like
    kiln's own (no torch import); () when torchvision is not installed."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    names: list[str] = []
    for path in sorted([*folder.glob("*.py"), *(folder / "segmentation").glob("*.py"), *(folder / "detection").glob("*.py")]):
        # a registered builder's def, after any further decorators (which may span lines)
        names += re.findall(r"@register_model\(\)\s*\n(?:@[^\n]*(?:\n[ )][^\n]*)*\n)*def (\w+)\(", path.read_text())
    return tuple(sorted(names))


def unknown_args(name: str, unknown: list[str], params: list[str]) -> str:
    """The message for model.args that the model does not take, with a did-you-mean for each close one among all
    its parameters (the data-derived ones too: a user may set num_classes)."""
    accepted = [p for p in params if p not in DATA_ARGS and p != "self"]
    hints = [f"'{u}' (did you mean '{close[0]}'?)" if (close := difflib.get_close_matches(u, params, n=1, cutoff=0.6))
             else repr(u) for u in unknown]
    return (f"model '{name}' does not take {', '.join(hints)} in model.args — it accepts: "
            f"{', '.join(accepted) or 'no arguments'}")


def check_kiln_model(name: str, args: dict) -> None:
    """A kiln model name and its model.args, checked against the model's signature (ValueError when wrong). Names
    of your own code (`pkg.mod:Class`) are checked when that code is imported (kiln.models.registry.construct)."""
    library, sep, arch = name.partition(":")
    if sep and library == "torchvision" and torchvision_names() and arch not in torchvision_names():
        close = difflib.get_close_matches(arch, torchvision_names(), n=3, cutoff=0.6)
        hint = f" — did you mean {', '.join(f'torchvision:{c}' for c in close)}?" if close else ""
        raise ValueError(f"torchvision has no model '{arch}'{hint} (`kiln models` lists them)")
    if sep:  # timm's names and your own code are checked when they are imported
        return
    entry = kiln_models().get(name)
    if entry is None:
        raise ValueError(unknown_model(name))
    unknown = [k for k in args if k not in entry.params]
    if unknown and not entry.takes_any:
        raise ValueError(unknown_args(name, unknown, list(entry.params)))
