"""The config described for people: the JSON schema, `kiln schema`'s tables and readable validation errors."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ValidationError,
)

from kiln.config.root import Config
from kiln.config.task_sections import TASK_CONFIGS, owner_of
from kiln.core.errors import KilnError


def json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kiln config"
    schema.setdefault("properties", {})["base"] = {
        "type": "string", "description": "Path of a config file this one extends (merged key by key)."}
    schema["properties"]["on_device"] = {
        "type": "object", "propertyNames": {"enum": ["cpu", "cuda", "mps", "xpu"]},
        "additionalProperties": {"type": "object"},
        "description": "Settings for one kind of device, applied over this file when the run uses it (a derived "
                       "file and the command line still win), e.g. {cpu: {data: {batch_size: 256}}}."}
    return schema


def schema_markdown(key: str | None = None) -> str:
    """Every config key as Markdown tables (one per section: key, type, default, description); `key` narrows it
    to a section (`data.augment`) or one key (`optim.lr`)."""
    sections: list[tuple[str, type[BaseModel], str]] = [("", Config, "top level")]
    out: list[str] = []
    while sections:
        prefix, model, title = sections.pop(0)
        rows = []
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            if path == "task":  # one schema per task
                sections += [("task.", cls, f"task (name: {task})") for task, cls in TASK_CONFIGS.items()]
                continue
            sub = _section_type(field.annotation)
            if sub is not None:
                sections.append((path + ".", sub, path))
                continue
            if key is None or path == key or path.startswith(key + ".") or prefix.startswith(key + "."):
                default = "required" if field.is_required() else \
                    "(computed)" if field.default_factory is not None else repr(field.default)
                text = " ".join((field.description or "").split()).replace("|", "\\|")
                rows.append(f"| `{path}` | {_type_name(field.annotation)} | `{default}` | {text} |")
        if rows:
            out += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    if not out:
        raise KilnError(f"no config key {key!r}{_did_you_mean(tuple(key.split('.'))) if key else ''}")
    return "\n".join(out)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _type_name(annotation: Any) -> str:
    """`int | None` -> int or null; Literal['a', 'b'] -> a \\| b."""
    import typing

    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return name.replace("|", "or")


# --------------------------------------------------------------------------- messages

def explain(error: ValidationError) -> str:
    """One readable line per problem, with a did-you-mean for unknown keys."""
    lines = []
    for err in error.errors():
        task, err["loc"] = _without_task_tag(err["loc"])
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
        # Union types report one error per member; the field name is enough for the user.
        loc = ".".join(p for p in loc.split(".") if p not in {"int", "float", "bool", "str", "none", "literal"}
                       and not re.match(r"(constrained-\w+|tuple\[|list\[|dict\[)", p))
        owner = owner_of(str(err["loc"][-1])) if task and len(err["loc"]) == 2 else None
        if err["type"] == "extra_forbidden" and owner:
            lines.append(f"{loc} is a {owner} setting; this task is {task} (task.name): remove it, or set "
                         f"task.name={owner}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'{_did_you_mean(err['loc'], task)}")
        else:
            where = f"'{loc}'" if loc else "config"
            msg = err["msg"].removeprefix("Value error, ")  # pydantic's wrapping of a validator's ValueError
            got = err.get("input")
            # a section-level check names what is wrong itself; repeating the whole section adds nothing
            lines.append(f"{where}: {msg}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    unique = list(dict.fromkeys(lines))
    return "invalid config:\n  " + "\n  ".join(unique)


def _without_task_tag(loc: tuple[Any, ...]) -> tuple[str | None, tuple[Any, ...]]:
    """(the task whose schema a task-section error comes from, the error's location without that tag): pydantic
    puts the union member's tag into the location (`task.multiclass.threshold`)."""
    if len(loc) >= 2 and loc[0] == "task" and loc[1] in TASK_CONFIGS:
        return str(loc[1]), (loc[0], *loc[2:])
    return None, loc


def _did_you_mean(loc: tuple[Any, ...], task: str | None = None) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = TASK_CONFIGS[task or "multiclass"] if part == "task" and model is Config else \
            getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = list(model.model_fields)
    prefix = ".".join(str(p) for p in loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f" — did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"
    return f" — valid keys{' in ' + repr(prefix) if prefix else ''}: {', '.join(known)}"

