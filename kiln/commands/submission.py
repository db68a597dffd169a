"""A competition's submission file: its template (sample_submission.csv) written back with the label column filled
from kiln's predictions, row for row.

The id column is the one whose values name the predicted files (by file name, with or without its extension);
the label column is the other one. Every template row must be matched by exactly one prediction and every
prediction by a row: anything else is an error that lists the mismatches, and nothing is written.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.core.errors import KilnError
from kiln.tasks import Prediction, task_class

SHOWN = 10  # how many mismatched ids a message lists


@dataclass(frozen=True)
class Template:
    """A submission template: its columns, its rows, and which columns are the id and the label."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    id_column: str
    label_column: str


def write_submission(predictions: Sequence[Prediction], names: list[str], template: Path, out: Path, *,
                     id_column: str | None = None, label_column: str | None = None, labels: str = "auto") -> Path:
    """`template` with its label column filled from `predictions` (labels as class indices in `names`' order or as
    names; auto: indices when the template's label column holds integers), written to `out`."""
    if not predictions:
        raise KilnError("no predictions to write into a submission: give the test images as INPUT")
    keyed = _by_key(predictions)
    sheet = read_template(template, keyed, id_column, label_column)
    as_index = labels == "index" or (labels == "auto" and _integers(r[sheet.label_column] for r in sheet.rows))
    matched = {row[sheet.id_column]: _match(row[sheet.id_column], keyed) for row in sheet.rows}
    _check_matched(sheet, matched, predictions)
    task = task_class(predictions[0].kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sheet.columns)
        writer.writeheader()
        for row in sheet.rows:
            prediction = matched[row[sheet.id_column]]
            assert prediction is not None, "every row is matched (checked above)"
            writer.writerow({**row, sheet.label_column: task.submission_value(prediction, names, as_index)})
    return out


def read_template(path: Path, keyed: dict[str, list[Prediction]], id_column: str | None,
                  label_column: str | None) -> Template:
    """The template's rows and its id and label columns (given, or found: the id column names the predicted
    files; the label column is the one other column)."""
    if not path.is_file():
        raise KilnError(f"--submission {path}: no such file (give the competition's sample submission CSV)")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), list(reader)
    if len(columns) < 2 or not rows:
        raise KilnError(f"--submission {path}: a template needs a header with an id and a label column and one row "
                        f"per test image; it has columns {columns} and {len(rows)} rows")
    for given, flag in ((id_column, "--id-column"), (label_column, "--label-column")):
        if given is not None and given not in columns:
            raise KilnError(f"{flag} {given!r} is not a column of {path}: its columns are {', '.join(columns)}")
    id_column = id_column or _id_column(path, columns, rows, keyed)
    others = [c for c in columns if c != id_column]
    if label_column is None and len(others) != 1:
        raise KilnError(f"{path} has columns {', '.join(columns)}: name the one to fill with --label-column")
    return Template(path, columns, rows, id_column, label_column or others[0])


def _id_column(path: Path, columns: list[str], rows: list[dict[str, str]], keyed: dict[str, list[Prediction]]) -> str:
    """The column whose values name the most predicted files."""
    hits = {c: sum(_key(row[c]) in keyed for row in rows) for c in columns}
    best = max(columns, key=lambda c: hits[c])
    if hits[best] == 0:
        some = ", ".join(sorted({Path(p.input).name for ps in keyed.values() for p in ps})[:3])
        raise KilnError(f"no column of {path} names the predicted files ({some}, ...) by file name, with or "
                        "without extension: check the inputs are the competition's test images, or name the id "
                        "column with --id-column")
    return best


def _key(value: str) -> str:
    """How an id and a file are compared: the file name without folders and without its extension."""
    name = Path(value.strip()).name
    return name.rsplit(".", 1)[0] if "." in name else name


def _by_key(predictions: Sequence[Prediction]) -> dict[str, list[Prediction]]:
    keyed: dict[str, list[Prediction]] = {}
    for p in predictions:
        keyed.setdefault(_key(p.input), []).append(p)
    return keyed


def _match(value: str, keyed: dict[str, list[Prediction]]) -> Prediction | None:
    found = keyed.get(_key(value), [])
    return found[0] if len(found) == 1 else None


def _check_matched(sheet: Template, matched: dict[str, Prediction | None], predictions: Sequence[Prediction]) -> None:
    """Every row matched by one prediction, every prediction used by one row; else one error listing all that
    differ."""
    keyed = _by_key(predictions)
    problems = []
    if twice := sorted(k for k, ps in keyed.items() if len(ps) > 1):
        problems.append(f"{len(twice)} names given by more than one input file (e.g. a.png and a.jpg): "
                        + _listed([p.input for k in twice for p in keyed[k]]))
    rows = Counter(_key(r[sheet.id_column]) for r in sheet.rows)
    if repeated := sorted(k for k, n in rows.items() if n > 1):
        problems.append(f"{len(repeated)} ids on more than one template row: " + _listed(repeated))
    if missing := [v for v, p in matched.items() if p is None and _key(v) not in twice]:
        problems.append(f"{len(missing)} template rows with no predicted image: " + _listed(missing))
    used = {_key(v) for v in matched}
    if extra := [p.input for p in predictions if _key(p.input) not in used]:
        problems.append(f"{len(extra)} predicted images not in the template: " + _listed(extra))
    if problems:
        raise KilnError(f"the predictions do not match {sheet.path} (id column {sheet.id_column!r}): "
                        + "; ".join(problems) + ". Predict exactly the competition's test images; nothing was written")


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _integers(values) -> bool:
    return all(v.strip().lstrip("-").isdigit() for v in values)
