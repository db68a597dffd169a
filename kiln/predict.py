"""`kiln predict`: class probabilities for new inputs (texts, CSV rows or image files) from a trained run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln.data import DataInfo
from kiln.data.registry import get_dataset
from kiln.errors import KilnError
from kiln.runs import RunDir
from kiln.train.device import autocast
from kiln.trained import load_trained


@dataclass
class Prediction:
    input: str
    label: str
    probability: float
    top: list[tuple[str, float]]  # the top-k (label, probability), best first


def predict(run_dir: Path, inputs: list[str], *, file: Path | None = None, checkpoint: str = "best",
            top_k: int = 3, overrides: Sequence[str] = ()) -> list[Prediction]:
    if Path(run_dir).suffix == ".onnx":
        if file:
            raise KilnError("--file is for text runs; an exported ONNX model takes image paths")
        return predict_onnx(Path(run_dir), list(inputs), top_k)
    run = load_trained(run_dir, checkpoint, overrides)
    cfg, model, info, device, precision = run.cfg, run.model, run.info, run.device, run.precision
    if info.kind == "custom":
        raise KilnError(f"{run_dir} was trained on your own Dataset ({cfg.data.name}): kiln predict reads image "
                        "files and texts only; use `kiln test` on a split of yours, or call the model on your "
                        "data (kiln.trained.load_trained gives it with its weights)")

    if info.kind == "text":
        texts = list(inputs) + (_csv_texts(file, cfg) if file else [])
        labels = texts
        batch = _text_batch(texts, run.run, cfg)
    else:
        if file:
            raise KilnError("--file is for text runs; pass image paths as arguments")
        labels = list(inputs)
        batch = _image_batch([Path(p) for p in inputs], info)
    if not labels:
        raise KilnError("nothing to predict: pass inputs as arguments or --file")
    with torch.no_grad(), autocast(device, precision):
        probs = run.task.probabilities(run.task.logits(model(batch.to(device)))).cpu()
    return _ranked(labels, probs, info.class_names, top_k)


def predict_onnx(path: Path, inputs: list[str], top_k: int = 3) -> list[Prediction]:
    """The same predictions from a model exported with `kiln export --format onnx` (through onnxruntime)."""
    from kiln.export import onnx_metadata, run_exported

    if not path.is_file():
        raise KilnError(f"ONNX file not found: {path}")
    meta = onnx_metadata(path)
    names, shape = meta["class_names"], meta["input"]["shape"]
    info = DataInfo("onnx", "image", len(names), names, in_channels=int(shape[1]),
                    image_size=(int(shape[2]), int(shape[3])), mean=meta["input"]["mean"], std=meta["input"]["std"])
    if not inputs:
        raise KilnError("nothing to predict: pass image paths as arguments")
    logits = torch.from_numpy(run_exported(path, "onnx", _image_batch([Path(p) for p in inputs], info).numpy()))
    return _ranked(inputs, logits.softmax(-1), names, top_k)


def _ranked(labels: list[str], probs: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
    k = min(top_k, len(names))
    out = []
    for text, p in zip(labels, probs):
        values, idx = p.topk(k)
        top = [(names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]
        out.append(Prediction(text, top[0][0], top[0][1], top))
    return out


def _csv_texts(file: Path, cfg) -> list[str]:
    from kiln.data.csv_rows import read_rows

    if not Path(file).is_file():
        raise KilnError(f"--file {file} not found")
    return read_rows(Path(file), get_dataset(cfg.data.name), cfg.data.text, require_labels=False).texts


def _text_batch(texts: list[str], run: RunDir, cfg) -> Any:
    from kiln.data.text import collate
    from kiln.data.vocab import Vocab, encode_texts

    vocab = run.vocab()
    if vocab is None:
        raise KilnError(f"{run} has no vocab.json: it is not a text run, or its folder is incomplete")
    seqs = encode_texts(texts, vocab, cfg.data.text)
    return collate(seqs, cfg.data.text.collate, Vocab.pad_id)


def _image_batch(paths: list[Path], info: DataInfo) -> torch.Tensor:
    """Image files -> (B, C, H, W) normalised like the training data (grayscale/RGB, resized)."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if info.in_channels == 1 else "RGB").resize(info.image_size[::-1])
                array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        except FileNotFoundError:
            raise KilnError(f"image not found: {path}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise KilnError(f"cannot read image {path}: {e}") from None
        h, w = info.image_size
        images.append(array.view(h, w, info.in_channels).permute(2, 0, 1))
    from kiln.data.transforms import BatchTransform

    return BatchTransform(info.mean, info.std)(torch.stack(images))  # exactly as evaluation batches
