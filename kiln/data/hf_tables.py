"""Hugging Face datasets and Parquet files (`data.name: hf_dataset`): a `save_to_disk` folder, a folder of Parquet
files, Parquet globs or URLs per split (`data.files`), or a dataset already in $HF_HOME — read as Arrow tables,
whose image column becomes the images of kiln's image pipeline (kiln.data.blobs: decoded through the image store
and its cache, as image folders are) and whose label column the targets (a `ClassLabel` feature names the
classes)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.image_files import Found, ImageFiles

log = logging.getLogger("kiln")

SPLIT_NAMES = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val",
               "dev": "val", "test": "test", "testing": "test"}


class Table:
    """One split's rows: an Arrow table (Parquet files are read when first asked for the whole table; a text column
    streams from them a record batch at a time), its features (datasets.Features), where it came from (for
    messages) and what identifies its contents (the caches' key)."""

    def __init__(self, where: str, identity: str, *, table: Any = None, features: Any = None,
                 files: list[str] | None = None, root: Path | None = None):
        self.where, self.identity, self.root = where, identity, root  # image paths are relative to root
        self._table, self._features, self.files = table, features, files or []

    @property
    def table(self) -> Any:
        if self._table is None:
            self._table = _read_files(self.files, self.where)
        return self._table

    @property
    def schema(self) -> Any:
        if self._table is not None:
            return self._table.schema
        import pyarrow.parquet as pq

        from kiln.core.storage import failures, is_url, open_file

        first = self.files[0]
        with failures(first):
            try:
                return pq.read_schema(open_file(first) if is_url(first) else first)
            except (OSError, ValueError) as e:
                raise KilnError(f"{first} is not a readable Parquet file ({e}); replace it") from None

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    @property
    def features(self) -> Any:
        if self._features is None:
            import datasets

            self._features = datasets.Features.from_arrow_schema(self.schema)
        return self._features

    def batches(self, columns: list[str], size: int) -> Iterator[Any]:
        """The rows' `columns`, `size` rows at a time (Arrow tables), without holding the whole table."""
        if self._table is not None or not self.files:
            table = self.table.select(columns)
            for start in range(0, max(table.num_rows, 1), size):
                yield table.slice(start, size)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        from kiln.core.storage import failures, is_url, open_file

        for name in self.files:
            with failures(name):
                reader = pq.ParquetFile(open_file(name) if is_url(name) else name)
                for batch in reader.iter_batches(batch_size=size, columns=columns):
                    yield pa.Table.from_batches([batch])


def scan_hf(cfg: DataConfig, task: str) -> Found:
    """The images and targets of every split the dataset has (`all` when it has no splits of its own)."""
    tables = open_tables(cfg)
    label = cfg.label_column if isinstance(cfg.label_column, str) else None
    if label is None:
        raise KilnError("data.name=hf_dataset reads one label column: set data.label_column to its name")
    for table in tables.values():
        _check_columns(table, (cfg.image_column, label))
    first = tables.get("train") or next(iter(tables.values()))
    class_names = _class_names(first, label, cfg, task)
    files = {split: _rows(table, cfg, label, class_names, task) for split, table in tables.items()}
    layout = "Hugging Face dataset" if first.identity.startswith("hf:") else "Parquet files"
    from kiln.tasks import task_class

    return Found(files, class_names, layout, task_class(task).noun)


def holds_images(cfg: DataConfig) -> bool:
    """Whether the dataset's rows are images (data.image_column is one of its columns) rather than texts."""
    tables = open_tables(cfg)
    table = tables.get("train") or next(iter(tables.values()))
    return cfg.image_column in table.column_names


def text_rows(cfg: DataConfig) -> dict[str, Any]:
    """pool -> its text rows (kiln.data.text_rows.TableText), a ClassLabel label column read as its names."""
    from kiln.data.text_rows import TableText
    from kiln.tasks.targets import columns

    label = columns(cfg.text.label_column)
    return {split: TableText(table, _label_names(table, label[0]) if len(label) == 1 else None)
            for split, table in open_tables(cfg).items()}


def open_tables(cfg: DataConfig) -> dict[str, Table]:
    """split -> Table: data.files' Parquet files, else what data.root holds (a saved dataset, Parquet files), else
    data.root as the name of a dataset in the Hugging Face cache."""
    if cfg.files:
        return {SPLIT_NAMES[split]: _parquet(pattern) for split, pattern in cfg.files.items()}
    if cfg.root is None:
        raise KilnError("data.name=hf_dataset needs data.root (a save_to_disk folder, a folder of Parquet files, or "
                        "a dataset name in the Hugging Face cache) or data.files ({train: GLOB, test: GLOB})")
    root = Path(cfg.root)
    if root.is_dir() and ((root / "dataset_dict.json").is_file() or (root / "state.json").is_file()):
        return _saved(root)
    if root.is_dir():
        return _parquet_folder(root)
    if root.exists():
        raise KilnError(f"data.root={root} is a file; hf_dataset reads a folder (save_to_disk, or Parquet files)")
    return _cached(str(cfg.root), cfg.download)


def _saved(root: Path) -> dict[str, Table]:
    """A `save_to_disk` folder: a DatasetDict (its splits) or one Dataset (split by kiln)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(root))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise KilnError(f"data.root={root}: cannot load the saved dataset ({e})") from None
    if isinstance(loaded, datasets.DatasetDict):
        return _splits({name: _from_dataset(ds, f"{root} [{name}]", root) for name, ds in loaded.items()}, root)
    return {"all": _from_dataset(loaded, str(root), root)}


def _from_dataset(ds: Any, where: str, root: Path | None) -> Table:
    if getattr(ds, "_indices", None) is not None:  # a selection or shuffle saved as an index mapping
        ds = ds.flatten_indices()
    return Table(where, f"hf:{where}\0{ds._fingerprint}", table=ds.data.table, features=ds.features, root=root)


def _splits(found: dict[str, Table], where: Path | str) -> dict[str, Table]:
    """The dataset's own splits under kiln's names (validation -> val); a dataset without a train split is one
    list kiln splits."""
    named = {SPLIT_NAMES[name.lower()]: table for name, table in found.items() if name.lower() in SPLIT_NAMES}
    if "train" in named:
        unused = [name for name in found if name.lower() not in SPLIT_NAMES]
        if unused:
            log.info("%s: not using the split(s) %s (kiln reads train, validation and test)", where, ", ".join(unused))
        return named
    if len(found) == 1:
        return {"all": next(iter(found.values()))}
    raise KilnError(f"{where} has the splits {', '.join(found)} but none named train; rename one (train, validation, "
                    "test), or name the files per split with data.files")


def _parquet_folder(root: Path) -> dict[str, Table]:
    """Parquet files of a folder (or its data/ folder, the Hub's layout), by the split their names start with:
    train-00000-of-00002.parquet, test.parquet; files without a split's name are one list kiln splits."""
    files = sorted(root.glob("*.parquet")) or sorted((root / "data").glob("*.parquet"))
    if not files:
        raise KilnError(f"data.root={root} holds no dataset: neither a save_to_disk folder (dataset_dict.json or "
                        "state.json) nor Parquet files (train-*.parquet, test-*.parquet)")
    by_split: dict[str, list[str]] = {}
    for f in files:
        head = f.name.split("-")[0].split(".")[0].lower()
        by_split.setdefault(head if head in SPLIT_NAMES else "all", []).append(str(f))
    if "all" in by_split and len(by_split) > 1:
        raise KilnError(f"{root}: {', '.join(Path(f).name for f in by_split['all'][:3])} do not name a split "
                        "(train-*, validation-*, test-*) while other files do; rename them, or set data.files")
    return _splits({split: _read_parquet(names, names[0] if len(names) == 1 else
                                         f"{root}/{split}-*.parquet ({len(names)} files)")
                    for split, names in by_split.items()}, root)


def _parquet(pattern: str) -> Table:
    from kiln.core.storage import expand

    names = expand(pattern)
    if not names:
        raise KilnError(f"data.files: {pattern} matches no file; check the pattern")
    return _read_parquet(names, names[0] if len(names) == 1 else f"{pattern} ({len(names)} files)")


_READ: dict[str, Table] = {}  # the last Parquet tables read, by the files' identities: a source asked twice reads once


def _read_parquet(names: list[str], where: str) -> Table:
    """Parquet files (local or URLs) as one table; the features Hugging Face wrote into their metadata, if any."""
    from kiln.core.storage import identity

    key = "parquet:" + "\0".join(identity(n) for n in names)
    if key not in _READ:
        _READ.clear()
        _READ[key] = _parquet_table(names, where, key)
    return _READ[key]


def _parquet_table(names: list[str], where: str, key: str) -> Table:
    from kiln.core.storage import is_url

    return Table(where, key, files=names, root=None if is_url(names[0]) else Path(names[0]).parent)


def _read_files(names: list[str], where: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kiln.core.storage import failures, is_url, open_file

    parts = []
    for name in names:
        with failures(name):
            try:
                parts.append(pq.read_table(open_file(name) if is_url(name) else name))
            except (pa.ArrowInvalid, OSError) as e:
                raise KilnError(f"{name} is not a readable Parquet file ({e}); replace it") from None
    try:
        return pa.concat_tables(parts, promote_options="default")
    except pa.ArrowInvalid as e:
        raise KilnError(f"{where}: the Parquet files have different columns ({e}); give them one schema") from None


def _cached(name: str, download: bool) -> dict[str, Table]:
    """A dataset by its Hub name, from the Hugging Face cache ($HF_HOME); fetched only with data.download=true."""
    import datasets

    try:
        with _offline(not download):
            loaded = datasets.load_dataset(name)
    except Exception as e:  # noqa: BLE001 — the library raises many kinds (ConnectionError, DatasetNotFound...)
        hint = "" if download else " (set data.download=true to fetch it from the Hugging Face Hub)"
        raise KilnError(f"data.root={name}: no such folder, and no dataset of that name in the Hugging Face cache "
                        f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}{hint}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return _splits({split: _from_dataset(ds, f"{name} [{split}]", None) for split, ds in loaded.items()}, name)


@contextmanager
def _offline(offline: bool) -> Iterator[None]:
    """No network for `datasets` and the Hub client while reading the cache (their settings put back after)."""
    import datasets
    import huggingface_hub.constants as hub

    before = datasets.config.HF_DATASETS_OFFLINE, hub.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_DATASETS_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_OFFLINE, hub.HF_HUB_OFFLINE = before


def _check_columns(table: Table, wanted: tuple[str, ...]) -> None:
    have = table.column_names
    missing = [c for c in wanted if c not in have]
    if missing:
        keys = {c: "data.image_column" if c == wanted[0] else "data.label_column" for c in missing}
        raise KilnError(f"{table.where} has no column {', '.join(map(repr, missing))} (its columns: "
                        f"{', '.join(have)}); set {' and '.join(keys[c] for c in missing)}")


def _class_names(table: Table, label: str, cfg: DataConfig, task: str) -> list[str]:
    """A ClassLabel feature's names, else data.class_names, else the task's reading of the label cells."""
    from kiln.tasks import task_class

    names = _label_names(table, label)
    if cfg.class_names:
        return list(cfg.class_names)
    if names is not None and task_class(task).class_per_sample:
        return names
    cells = [c for c in _cells(table, label) if c]
    return task_class(task).target_names(None, cells, [label], cfg.label_separator, table.where)


def _label_names(table: Table, label: str) -> list[str] | None:
    feature = table.features.get(label)
    return list(feature.names) if feature is not None and type(feature).__name__ == "ClassLabel" else None


def _cells(table: Table, label: str) -> list[str]:
    values = table.table.column(label).to_pylist()
    return ["" if v is None else str(v) for v in values]


def _rows(table: Table, cfg: DataConfig, label: str, class_names: list[str], task: str) -> ImageFiles:
    """Every row with a usable target as (image, target); a bad row stops with its split and row, or with
    data.on_bad_row=skip is counted and left out."""
    from kiln.data.blobs import ColumnImage
    from kiln.tasks import task_class

    images = table.table.column(cfg.image_column)
    paths = _is_path_column(images.type)
    named = _label_names(table, label)
    cells = _cells(table, label)
    out, skipped, first = ImageFiles(), 0, ""
    for row, cell in enumerate(cells):
        if named is not None and cell.lstrip("-").isdigit():  # ClassLabel: the index, renamed to kiln's names
            cell = named[int(cell)] if 0 <= int(cell) < len(named) else cell
        target, problem = task_class(task).parse_cells([cell], class_names, cfg.label_separator)
        if not cell and task_class(task).class_per_sample:
            problem = "no label"
        if problem:
            if cfg.on_bad_row == "error":
                raise KilnError(f"{table.where}, row {row}: {problem}. Fix the row, or set data.on_bad_row=skip")
            skipped, first = skipped + 1, first or f"row {row}: {problem}"
            continue
        image: Any = (table.root or Path()) / str(images[row]) if paths else \
            ColumnImage(images, row, table.identity, table.root)
        out.add(image, target, f"{table.where}, row {row}")
    if skipped:
        log.warning("skipped %d rows of %s (first: %s)", skipped, table.where, first)
    if not out.paths:
        raise KilnError(f"{table.where} has no usable rows")
    return out


def _is_path_column(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return True
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_struct(kind):
        return False
    raise KilnError(f"the image column is of type {kind}; kiln reads an Image feature, image bytes, or paths")
