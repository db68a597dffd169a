"""Finding a user's images: a folder of class subfolders (optionally under train/val/test folders), or CSV files of
paths and labels. Only file names are read here; decoding is kiln.data.image_store's job."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.core.errors import KilnError
from kiln.core.storage import is_url, open_text

if TYPE_CHECKING:
    from kiln.config import DataConfig

log = logging.getLogger("kiln")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


@dataclass
class ImageFiles:
    """Image files and their targets (class indices; multi-hot vectors or values from a CSV for multilabel and
    regression); `where` says where each came from (for messages)."""

    paths: list[Path] = field(default_factory=list)  # or images held elsewhere (kiln.data.blobs)
    labels: list = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)  # what each image is read with (its tar shard); empty: none

    def add(self, path: Path, label, where: str | None = None) -> None:
        self.paths.append(path)
        self.labels.append(label)
        self.where.append(where or str(path))

    def drop(self, bad: set[int]) -> ImageFiles:
        keep = [i for i in range(len(self.paths)) if i not in bad]
        return ImageFiles([self.paths[i] for i in keep], [self.labels[i] for i in keep], [self.where[i] for i in keep],
                          [self.groups[i] for i in keep] if self.groups else [])


@dataclass
class Found:
    """What a scan found: the file lists by split (`all` for a folder of class folders, split by kiln)."""

    files: dict[str, ImageFiles]
    class_names: list[str]  # the classes; the labels (multilabel); the target columns (regression)
    layout: str
    noun: str = "classes"

    def describe(self) -> str:
        counts = ", ".join(f"{name} {len(f.paths)}" for name, f in self.files.items())
        classes = f"{len(self.class_names)} {self.noun}"
        if self.noun == "classes":  # e.g. a test folder without some of the run's classes
            present = {label for f in self.files.values() for label in f.labels}
            if len(present) < len(self.class_names):
                classes = f"{len(present)} of the {len(self.class_names)} classes"
        return f"{classes} ({self.layout}): {counts} images"


def read_class_map(path: Path) -> list[str]:
    """A class-map file: one class name per line, in label order (blank lines and # comments ignored)."""
    if not Path(path).is_file():
        raise KilnError(f"data.class_map file not found: {path}")
    names = [line.strip() for line in Path(path).read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names or len(set(names)) != len(names):
        raise KilnError(f"{path}: a class map lists each class name once, one per line")
    return names


def scan_folder(root: Path, class_names: list[str] | None) -> Found:
    """`root/<class>/...` (kiln splits it) or `root/{train,val,test}/<class>/...` (the folders are the splits)."""
    root = Path(root)
    if not root.is_dir():
        raise KilnError(f"data.root={root} is not a folder; an image folder holds one subfolder per class "
                        "(or train/, val/, test/ folders of class subfolders)")
    subdirs = {d.name.lower(): d for d in _visible_dirs(root)}
    split_dirs = {split: subdirs[n] for split, names in SPLIT_FOLDERS.items() for n in names if n in subdirs}
    if "train" not in split_dirs:
        if split_dirs:
            raise KilnError(f"{root} has {', '.join(d.name for d in split_dirs.values())} but no train/ (or "
                            "training/) folder; put the training images in train/<class>/")
        given = class_names is not None  # e.g. a run's classes, tested on a folder that may lack some
        class_names = class_names or sorted(d.name for d in _visible_dirs(root))
        return Found({"all": _scan_classes(root, class_names, allow_missing=given)}, class_names, "class folders")
    if class_names is None:
        class_names = sorted(d.name for d in _visible_dirs(split_dirs["train"]))
    files = {split: _scan_classes(folder, class_names, allow_missing=split != "train")
             for split, folder in split_dirs.items()}
    return Found(files, class_names, "train/val/test folders")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan_classes(folder: Path, class_names: list[str], allow_missing: bool = False) -> ImageFiles:
    dirs = _visible_dirs(folder)
    if not dirs:
        stray = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS][:3]
        hint = f" (images lie directly in it, e.g. {', '.join(stray)}: move them into class folders)" if stray else ""
        raise KilnError(f"no class folders in {folder}{hint}; kiln expects {folder}/<class>/<image>")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [d.name for d in dirs if d.name not in index]
    if unknown:
        raise KilnError(f"{folder}: class folder(s) {', '.join(map(repr, unknown))} are not among the classes "
                        f"({', '.join(class_names[:20])}); rename them, or list them in data.class_names / data.class_map")
    files, skipped = ImageFiles(), Counter[str]()
    for d in dirs:
        found = 0
        for path in sorted(d.rglob("*")):
            rel = path.relative_to(d)
            if any(part.startswith(".") for part in rel.parts):
                skipped["hidden"] += path.is_file()
            elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                files.add(path, index[d.name])
                found += 1
            elif path.is_file():
                skipped["not an image (" + (path.suffix.lower() or "no extension") + ")"] += 1
        if not found:
            raise KilnError(f"class folder {d} has no images (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
                            "also in subfolders); add images or remove the folder")
    if skipped:
        log.info("%s: skipped %s", folder, ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
    missing = [name for name in class_names if name not in {d.name for d in dirs}]
    if missing and not allow_missing:
        log.warning("%s: no folder for class(es) %s", folder, ", ".join(missing[:10]))
    return files


def scan_csvs(cfg: DataConfig, class_names: list[str] | None, task: str = "multiclass") -> Found:
    """train.csv, test.csv and (optional) val.csv in data.root — or the CSV files data.files names per split, local
    or at URLs: image paths relative to the CSV (data.path_column), and targets (data.label_column) — a class
    (multiclass), a label set such as `cat|dog` (multilabel) or numbers in one or several columns (regression)."""
    from kiln.tasks import task_class
    from kiln.tasks.targets import UNIT, columns

    path_column, on_bad_row, separator = cfg.path_column, cfg.on_bad_row, cfg.label_separator
    label_columns = columns(cfg.label_column)
    task_class(task).check_columns(label_columns, "data.label_column")
    root = Path(cfg.root or ".")
    csv_files: dict[str, Path | str] = \
        {split: name if is_url(name) else Path(name) for split, name in (cfg.files or {}).items()} or \
        {split: root / f"{split}.csv" for split in ("train", "val", "test") if (root / f"{split}.csv").is_file()}
    if "train" not in csv_files:
        raise KilnError(f"no train.csv in {root}; an image CSV dataset is train.csv (and test.csv, optional val.csv) "
                        f"with columns {path_column!r} and {', '.join(map(repr, label_columns))}")
    rows = {split: _read_csv(path, path_column, label_columns) for split, path in csv_files.items()}
    raws = [UNIT.join(labels) for _, labels, _ in rows["train"] if labels]  # several columns: joined
    class_names = task_class(task).target_names(class_names, raws, label_columns, separator, csv_files["train"])
    files = {split: _resolve_rows(split_rows, csv_files[split], class_names, on_bad_row, task, separator)
             for split, split_rows in rows.items()}
    return Found(files, class_names, "CSV files", task_class(task).noun)


def _read_csv(path: Path | str, path_column: str, label_columns: list[str]) -> list[tuple[str, list[str], int]]:
    """(path, label cells, line) of every row; a malformed row is kept with an empty path and reported later."""
    out = []
    try:
        with open_text(path) as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in (path_column, *label_columns) if c not in header]
            if missing:
                raise KilnError(f"{path} has no column {', '.join(map(repr, missing))} (its header: "
                                f"{', '.join(header) or 'none'}); set data.path_column / data.label_column")
            p, labs = header.index(path_column), [header.index(c) for c in label_columns]
            for row in reader:
                if not row:
                    continue
                ok = len(row) == len(header)
                out.append((row[p].strip() if ok else "", [row[i].strip() for i in labs] if ok else [],
                            reader.line_num))
    except UnicodeDecodeError as e:
        raise KilnError(f"{path} is not UTF-8 text ({e}); re-save it as UTF-8") from None
    except csv.Error as e:
        raise KilnError(f"{path} is not a valid CSV file: {e}") from None
    return out


def _remote_lister(csv_path: Path | str) -> Any:
    """For a CSV at a URL: a row's image path -> the image there (None for a local CSV)."""
    if not is_url(csv_path):
        return None
    from kiln.core.storage import identity
    from kiln.data.blobs import RemoteFile

    listed_in, base = identity(str(csv_path)), str(csv_path).rsplit("/", 1)[0]
    return lambda rel: RemoteFile(rel if is_url(rel) else f"{base}/{rel.lstrip('/')}", listed_in)


def _resolve_rows(rows: list[tuple[str, list[str], int]], csv_path: Path | str, class_names: list[str],
                  on_bad_row: str, task: str = "multiclass", separator: str = "|") -> ImageFiles:
    """The rows' images and targets. A CSV at a URL lists images beside it (or at URLs of their own), read through
    the store; one missing there is named when it fails to decode (their existence is not asked row by row)."""
    from kiln.tasks import task_class

    files, skipped, first = ImageFiles(), 0, ""
    remote = _remote_lister(csv_path)
    for rel, labels, line in rows:
        where = f"{csv_path}, line {line}"
        path: Any = (remote(rel) if remote is not None else Path(csv_path).parent / rel) if rel else None
        target, problem = task_class(task).parse_cells(labels, class_names, separator) if path is not None else (None, "")
        problem = ("malformed row (wrong number of columns)" if path is None else problem
                   or (f"image {path} not found" if remote is None and not path.is_file() else ""))
        if problem:
            if on_bad_row == "error":
                raise KilnError(f"{where}: {problem}. Fix the row, or set data.on_bad_row=skip to skip such rows")
            skipped, first = skipped + 1, first or f"line {line}: {problem}"
            continue
        assert path is not None and target is not None
        files.add(path, target, where)
    if skipped:
        log.warning("skipped %d bad rows in %s (first: %s)", skipped, csv_path, first)
    if not files.paths:
        raise KilnError(f"{csv_path} has no usable rows")
    return files
