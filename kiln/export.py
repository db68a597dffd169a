"""`kiln export`: a trained run's model as ONNX, a `torch.export` program (.pt2) or TorchScript, with what a caller
needs to feed it (input shape, channels, normalisation, class names, task) beside it as JSON and, for ONNX, in the
model's metadata. Every export is checked before it is reported done: the exported model, run on a real batch of
the run's test data (or, without the data, a deterministic stand-in batch of the right shape), must match the
PyTorch model; the largest difference is reported. A file that fails the check is removed, not left as if good.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.errors import KilnError, TrainingStopped, first_line
from kiln.trained import Trained, load_trained

log = logging.getLogger("kiln")
FORMATS = {"onnx": ".onnx", "exported": ".pt2", "torchscript": ".ts.pt"}
TOLERANCE = 1e-4  # largest absolute difference in the logits accepted between PyTorch and the export


@dataclass
class Exported:
    path: Path
    meta_path: Path
    max_abs_diff: float
    batch: int


class Logits(torch.nn.Module):
    """The trained model with the task's output convention applied: the exported graph returns logits (B, C)."""

    def __init__(self, model: torch.nn.Module, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.logits(self.model(x))


def export(run_dir: Path | str, fmt: str, *, checkpoint: str = "best", out: Path | None = None) -> Exported:
    if fmt not in FORMATS:
        raise KilnError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    trained = load_trained(run_dir, checkpoint, device="cpu")
    if trained.info.kind != "image":
        raise KilnError("kiln export handles image models; a text model takes token ids with padding or offsets "
                        "(a TextBatch), which the exporters cannot trace as one tensor input yet")
    model = Logits(trained.model.float().to(memory_format=torch.contiguous_format), trained.task).eval()
    sample = sample_batch(trained)
    path = Path(out) if out else trained.run.path / f"model{FORMATS[fmt]}"
    meta = metadata(trained, fmt)
    try:
        {"onnx": _onnx, "exported": _exported, "torchscript": _torchscript}[fmt](model, sample, path, meta)
    except KilnError:
        raise
    except Exception as e:  # noqa: BLE001 — an exporter failing on an operation: say which, suggest the others
        path.unlink(missing_ok=True)
        others = ", ".join(f for f in FORMATS if f != fmt)
        raise KilnError(f"the model could not be exported as {fmt}: {type(e).__name__}: "
                        f"{first_line(e)[:300]}; try --format {others}") from None
    diff = parity(path, fmt, model, sample)
    if not diff <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise TrainingStopped(f"the {fmt} export does not match the PyTorch model (largest logit difference "
                              f"{diff:.3g} > {TOLERANCE}); the file was removed")
    meta_path = path.with_name(path.name + ".json")
    meta_path.write_text(json.dumps({**meta, "parity_max_abs_diff": diff}, indent=2) + "\n")
    return Exported(path, meta_path, diff, len(sample))


def sample_batch(trained: Trained, size: int = 8) -> torch.Tensor:
    """Up to `size` real test images as the model sees them, or a seeded stand-in when the data is not here."""
    from kiln.data import build_data

    try:
        data = build_data(trained.cfg.data, seed=0, device=torch.device("cpu"), splits=("test",))
        images, _ = next(iter(data.require("test").epoch(0)))
        return images[:size].contiguous()
    except KilnError as e:
        log.warning("checking the export on a stand-in batch (the run's test data is not here: %s)", e)
    h, w = trained.info.image_size
    return torch.randn(size, trained.info.in_channels, h, w, generator=torch.Generator().manual_seed(0))


def metadata(trained: Trained, fmt: str) -> dict[str, Any]:
    info = trained.info
    return {"format": fmt, "task": trained.cfg.task.name, "class_names": info.class_names,
            "input": {"shape": ["batch", info.in_channels, *info.image_size], "dtype": "float32",
                      "pixels": "scaled to [0, 1], then (x - mean) / std", "mean": info.mean, "std": info.std,
                      "stored_size": info.stored_size},
            "output": "logits (batch, classes); softmax gives probabilities",
            "checkpoint": str(trained.checkpoint)}


def _onnx(model, sample, path: Path, meta: dict[str, Any]) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (sample,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))


def _exported(model, sample, path: Path, meta: dict[str, Any]) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (sample,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path), extra_files={"kiln.json": json.dumps(meta)})


def _torchscript(model, sample, path: Path, meta: dict[str, Any]) -> None:
    traced = torch.jit.trace(model, sample)
    torch.jit.save(traced, str(path), _extra_files={"kiln.json": json.dumps(meta)})


def parity(path: Path, fmt: str, model: torch.nn.Module, sample: torch.Tensor) -> float:
    """Largest absolute logit difference between the exported file and the PyTorch model on `sample` (and on a
    batch of another size, so a fixed batch dimension is caught)."""
    diffs = []
    for x in (sample, sample[:3]):
        with torch.no_grad():
            expected = model(x).numpy()
        diffs.append(float(np.abs(run_exported(path, fmt, x.numpy()) - expected).max()))
    return max(diffs)


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Logits from an exported file (ONNX through onnxruntime)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    with torch.no_grad():
        if fmt == "exported":
            return torch.export.load(str(path)).module()(torch.from_numpy(x)).numpy()
        return torch.jit.load(str(path))(torch.from_numpy(x)).numpy()


def onnx_metadata(path: Path) -> dict[str, Any]:
    """The metadata kiln stored in an exported ONNX file (class names, normalisation, input shape)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 — not an ONNX file
        raise KilnError(f"cannot read {path} as ONNX: {e}") from None
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    if "class_names" not in meta:
        raise KilnError(f"{path} was not exported by kiln export (no class names in its metadata)")
    return meta
