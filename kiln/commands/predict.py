"""`kiln predict`: class probabilities for new inputs (texts, CSV rows or image files) from a trained run."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from kiln.core.errors import KilnError
from kiln.core.formats import ExportMeta
from kiln.data import DataInfo
from kiln.data.registry import get_dataset
from kiln.runs import RunDir
from kiln.tasks import Prediction
from kiln.train.device import autocast
from kiln.train.trained import Trained, load_trained

log = logging.getLogger("kiln")
# How many inputs must all get one answer before predict warns of a collapsed model.
CONSTANT_AFTER = 10


def predict(run_dir: Path, inputs: list[str], *, file: Path | None = None, checkpoint: str = "best",
            top_k: int = 3, overrides: Sequence[str] = (), path_column: str | None = None) -> list[Prediction]:
    """Predictions for `inputs` (and `file`) with a run's `checkpoint`, or with an exported ONNX model;
    `path_column`: the column of image paths in CSV inputs (default: the run's data.path_column, else the one
    column that names image files)."""
    if Path(run_dir).suffix == ".onnx":
        if file:
            raise KilnError("--file is for text runs; an exported ONNX model takes image paths")
        return warn_if_constant(predict_onnx(Path(run_dir), list(inputs), top_k, path_column))
    return predict_with(load_trained(run_dir, checkpoint, overrides), inputs, file=file, top_k=top_k,
                        path_column=path_column)


def predict_with(run: Trained, inputs: list[str], *, file: Path | None = None, top_k: int = 3,
                 path_column: str | None = None) -> list[Prediction]:
    """`predict` with a model already loaded: says which weights answer (and whether the run is unfinished)."""
    log.info("predicting with %s", run.provenance())
    if (unfinished := run.unfinished()) is not None:
        log.warning("%s", unfinished)
    return warn_if_constant(_predict(run, inputs, file, top_k, path_column))


def warn_if_constant(results: list[Prediction]) -> list[Prediction]:
    """Say so when many inputs all got the same answer: the sign of a model that collapsed onto one class."""
    labels = {r.label for r in results}
    if len(results) >= CONSTANT_AFTER and len(labels) == 1:
        log.warning("all %d inputs got the same prediction (%r): the model may have collapsed onto one answer "
                    "(its training log and kiln report say so when validation showed it, with the likely causes)",
                    len(results), next(iter(labels)))
    return results


def _predict(run: Trained, inputs: list[str], file: Path | None, top_k: int,
             path_column: str | None) -> list[Prediction]:
    cfg, model, info, device, precision = run.cfg, run.model, run.info, run.device, run.precision
    if info.kind == "custom":
        return _predict_custom(run, file, top_k)

    if info.kind == "text":
        texts = list(inputs) + (_csv_texts(file, cfg) if file else [])
        if not texts:
            raise KilnError("nothing to predict: pass inputs as arguments or --file")
        batches: Iterable[tuple[list[str], Any]] = [(texts, _text_batch(texts, run.run, cfg))]
    else:
        if file:
            raise KilnError("--file is for text runs; pass image files, folders, globs or a CSV of paths")
        configured = cfg.data.path_column if cfg.data.path_column != "path" else None  # the default: find it
        paths = image_inputs(inputs, path_column or configured)
        per_image = _eval_transforms(cfg, info)
        batches = ((chunk, _image_batch([Path(p) for p in chunk], info, per_image)) for chunk in _chunks(paths, 256))
    out = []
    task = run.task
    for labels, batch in batches:
        with torch.no_grad(), autocast(device, precision):
            predicted = task.predictions(task.logits(model(batch.to(device)))).float().cpu()
        out += answers(task, labels, predicted, info.class_names, top_k)
    return out


def _predict_custom(run, file: Path | None, top_k: int) -> list[Prediction]:
    """A run on your own Dataset: its split="predict" (file=--file) samples, in order, named by their index."""
    from kiln.data.user import predict_batches
    from kiln.train.step import forward

    batches = predict_batches(run.cfg.data, run.info.num_classes, file, run.device, run.cfg.task.name)
    out: list[Prediction] = []
    task = run.task
    for inputs, _ in batches.epoch(0):
        with torch.no_grad(), autocast(run.device, run.precision):
            predicted = task.predictions(task.logits(forward(run.model, inputs))).float().cpu()
        out += answers(task, [f"sample {len(out) + i}" for i in range(len(predicted))], predicted,
                       run.info.class_names, top_k)
    return out


def image_inputs(inputs: Sequence[str], path_column: str | None = None) -> list[str]:
    """Image files from what a user passes: files, folders (every image in them, recursively), glob patterns,
    and CSV files of paths (column `path_column`, else `path`, else the one column that names image files;
    relative to the CSV)."""
    import glob

    from kiln.data.image_files import IMAGE_EXTENSIONS

    paths: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise KilnError(f"no images in {p} (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
            paths += found
        elif p.suffix.lower() == ".csv":
            paths += _csv_paths(p, path_column)
        elif any(ch in item for ch in "*?[") and not p.exists():
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise KilnError(f"no files match {item!r}")
            paths += matched
        else:
            paths.append(item)
    if not paths:
        raise KilnError("nothing to predict: pass image files, folders, glob patterns or a CSV of paths")
    return paths


def _csv_paths(path: Path, column: str | None) -> list[str]:
    import csv

    if not path.is_file():
        raise KilnError(f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        header = list(rows[0]) if rows else []
    column = column or _path_column(path, header, rows)
    if column not in header:
        raise KilnError(f"{path} has no {column!r} column of image paths (its header: {', '.join(header)}); "
                        "name the column with --path-column")
    return [str(path.parent / row[column].strip()) for row in rows if (row.get(column) or "").strip()]


def _path_column(path: Path, header: list[str], rows: list[dict[str, str]]) -> str:
    """The column of image paths when none is named: `path`, else the one column whose every value is an image
    file name (file, filename, image, ...)."""
    from kiln.data.image_files import IMAGE_EXTENSIONS

    if "path" in header or not rows:
        return "path"
    named = [c for c in header if all(Path((row.get(c) or "").strip()).suffix.lower() in IMAGE_EXTENSIONS
                                      for row in rows)]
    if len(named) != 1:
        found = f"{' and '.join(named)} all name image files" if named else "no column names image files"
        raise KilnError(f"{path} has no 'path' column and {found} (its header: {', '.join(header)}); name the "
                        "column of image paths with --path-column")
    log.info("%s: image paths from its column %r", path, named[0])
    return named[0]


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_onnx(path: Path, inputs: list[str], top_k: int = 3, path_column: str | None = None) -> list[Prediction]:
    """The same predictions from a model exported with `kiln export --format onnx` (through onnxruntime)."""
    from kiln.commands.export import onnx_metadata, run_exported, task_of

    if not path.is_file():
        raise KilnError(f"ONNX file not found: {path}")
    meta = onnx_metadata(path)
    if meta["input"].get("layout") in ("pad", "offsets", "masked"):
        return _predict_onnx_text(path, meta, inputs, top_k)
    names, shape = meta["class_names"], meta["input"]["shape"]
    stored = meta["input"].get("stored_size") or [0, 0]
    info = DataInfo("onnx", "image", len(names), names, in_channels=int(shape[1]),
                    image_size=(int(shape[2]), int(shape[3])), mean=_per_channel(meta["input"]["mean"]),
                    std=_per_channel(meta["input"]["std"]), stored_size=(int(stored[0]), int(stored[1])))
    paths = image_inputs(inputs, path_column)
    logits = torch.from_numpy(run_exported(path, "onnx", _image_batch([Path(p) for p in paths], info).numpy()))
    task = task_of(meta)
    return answers(task, paths, task.predictions(logits), names, top_k)


def _predict_onnx_text(path: Path, meta: ExportMeta, texts: list[str], top_k: int) -> list[Prediction]:
    """Texts through an exported text model: tokenised with the vocabulary and settings stored in its metadata."""
    from kiln.commands.export import run_exported, task_of
    from kiln.config import TextConfig
    from kiln.data.text import collate
    from kiln.data.vocab import Vocab, encode_texts

    if not texts:
        raise KilnError("nothing to predict: pass texts as arguments")
    spec = meta["input"]
    tok = spec["tokenization"]
    if spec["layout"] == "masked":  # a model's own tokenizer, in the folder the export names beside it
        from kiln.data.model_tokenizer import ModelTokenizer

        cfg = TextConfig(tokenizer="model", max_len=tok["max_len"])
        encoder: Any = ModelTokenizer(path.parent / spec["tokenizer_dir"])
    else:
        cfg = TextConfig(tokenizer=tok["tokenizer"], ngrams=tok["ngrams"], max_len=tok["max_len"])
        itos = spec.get("vocab")
        if not itos:
            raise KilnError(f"{path}: its metadata holds no vocabulary for its {spec['layout']} text input; export the "
                            "run again with kiln export")
        encoder = Vocab(itos)
    batch = collate(encode_texts(texts, encoder, cfg), "offsets" if spec["layout"] == "offsets" else "pad",
                    spec["pad_id"])
    second = batch.offsets if spec["layout"] == "offsets" else \
        batch.mask if spec["layout"] == "masked" else batch.lengths
    assert second is not None
    logits = run_exported(path, "onnx", batch.ids.long().numpy(), second.long().numpy())
    task = task_of(meta)
    return answers(task, texts, task.predictions(torch.from_numpy(logits)), meta["class_names"], top_k)


def _per_channel(value) -> tuple[float, ...]:
    return tuple(value) if isinstance(value, list) else (float(value),)  # older exports: one value for all


def answers(task, inputs: list[str], predicted: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
    """The task's predictions for each input: the top-k classes; every label at or above its threshold (and every
    label's probability); the values of the targets in their original units."""
    return task.answers(inputs, predicted, names, top_k)


def _csv_texts(file: Path, cfg) -> list[str]:
    from kiln.data.csv_rows import read_rows

    if not Path(file).is_file():
        raise KilnError(f"--file {file} not found")
    return read_rows(Path(file), get_dataset(cfg.data.name), cfg.data.text, require_labels=False).texts


def _text_batch(texts: list[str], run: RunDir, cfg) -> Any:
    from kiln.data.text import collate
    from kiln.data.vocab import encode_texts

    vocab = run.vocab()
    if vocab is None:
        raise KilnError(f"{run} has neither vocab.json nor tokenizer/: it is not a text run, or its folder is "
                        "incomplete")
    seqs = encode_texts(texts, vocab, cfg.data.text)
    return collate(seqs, cfg.data.text.collate, vocab.pad_id)


def _eval_transforms(cfg, info: DataInfo):
    """The run's data.transforms.eval, if it has one (image folders/CSVs): predictions see what evaluation saw."""
    if not cfg.data.transforms.eval:
        return None
    from kiln.data.config_transforms import PerImage, build_pipeline

    return PerImage(build_pipeline(cfg.data.transforms.eval, "data.transforms.eval"), cfg.seed, info.image_size,
                    "data.transforms.eval")


def _image_batch(paths: list[Path], info: DataInfo, per_image=None) -> torch.Tensor:
    """Image files -> (B, C, H, W) exactly as evaluation batches: decoded like the training images (mode, EXIF,
    resized to cover the stored size, centre cut), centre-cropped to the model's size, normalised."""
    from kiln.data.image_store import BadImage, decode
    from kiln.data.transforms import BatchTransform

    stored = info.stored_size if info.stored_size[0] else info.image_size
    images = []
    for path in paths:
        if not path.is_file():
            raise KilnError(f"image not found: {path}")
        try:
            images.append(torch.from_numpy(decode(path, info.in_channels, stored)))
        except BadImage as e:
            raise KilnError(f"cannot read image {path}: {e.error}") from None
    batch = torch.stack(images)
    if per_image is not None:
        batch = per_image(batch, 0, 0)
    return BatchTransform(info.mean, info.std, size=info.image_size)(batch)
