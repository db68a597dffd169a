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
MODEL_MODULES = ("vision.py", "text.py")

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
        tree = ast.parse((Path(__file__).parent / "models" / module).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(_is_register(d) for d in node.decorator_list):
                a = node.args
                params = tuple(p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs))
                entries[node.name] = ModelEntry(node.name, params, a.kwarg is not None)
    return entries


def _is_register(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Name) and decorator.id == "register_model"


def unknown_model(name: str) -> str:
    """The message for a model name kiln does not have."""
    known = sorted(kiln_models())
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" — did you mean '{close[0]}'? Registered models:" if close else " — registered models:"
    return f"unknown model '{name}'{hint} {', '.join(known)}, or give your own as 'package.module:ClassName'"


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
    if ":" in name:
        return
    entry = kiln_models().get(name)
    if entry is None:
        raise ValueError(unknown_model(name))
    unknown = [k for k in args if k not in entry.params]
    if unknown and not entry.takes_any:
        raise ValueError(unknown_args(name, unknown, list(entry.params)))
