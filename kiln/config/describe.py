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
    sections: list[tuple[str, type[BaseModel]]] = [("", Config)]
    out: list[str] = []
    while sections:
        prefix, model = sections.pop(0)
        rows = []
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            sub = _section_type(field.annotation)
            if sub is not None:
                sections.append((path + ".", sub))
                continue
            if key is None or path == key or path.startswith(key + ".") or prefix.startswith(key + "."):
                default = "required" if field.is_required() else \
                    "(computed)" if field.default_factory is not None else repr(field.default)
                text = " ".join((field.description or "").split()).replace("|", "\\|")
                rows.append(f"| `{path}` | {_type_name(field.annotation)} | `{default}` | {text} |")
        if rows:
            title = prefix.rstrip(".") or "top level"
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
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
        # Union types report one error per member; the field name is enough for the user.
        loc = ".".join(p for p in loc.split(".") if p not in {"int", "float", "bool", "str", "none", "literal"}
                       and not re.match(r"(constrained-\w+|tuple\[|list\[|dict\[)", p))
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'{_did_you_mean(err['loc'])}")
        else:
            where = f"'{loc}'" if loc else "config"
            msg = err["msg"].removeprefix("Value error, ")  # pydantic's wrapping of a validator's ValueError
            got = err.get("input")
            # a section-level check names what is wrong itself; repeating the whole section adds nothing
            lines.append(f"{where}: {msg}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    unique = list(dict.fromkeys(lines))
    return "invalid config:\n  " + "\n  ".join(unique)


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = list(model.model_fields)
    prefix = ".".join(str(p) for p in loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f" — did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"
    return f" — valid keys{' in ' + repr(prefix) if prefix else ''}: {', '.join(known)}"

