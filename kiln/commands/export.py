"""`kiln export`: a trained run's model as ONNX, a `torch.export` program (.pt2) or TorchScript, with what a caller
needs to feed it (input shape, channels, normalisation, class names, task) beside it as JSON and, for ONNX, in the
model's metadata. Every export is checked before it is reported done: the exported model, run on a real batch of
the run's test data (or, without the data, a deterministic stand-in batch of the right shape), must match the
PyTorch model; the largest difference is reported. A file that fails the check is removed, not left as if good.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from kiln.core.errors import CheckFailed, KilnError, first_line
from kiln.core.formats import ExportMeta, by_name
from kiln.data.inputs import inputs_of
from kiln.train.trained import Trained, load_trained, model_config

if TYPE_CHECKING:
    from kiln.tasks import Task

log = logging.getLogger("kiln")
FORMATS = {"onnx": ".onnx", "exported": ".pt2", "torchscript": ".ts.pt", "safetensors": ".safetensors"}
ONNX_ONE_FILE = 1.5 * 2**30  # bytes of weights up to which model.onnx holds them itself (protobuf's limit: 2 GiB)
TOLERANCE = 1e-4  # largest absolute difference in an output accepted between PyTorch and the export (a graph may
# set its own for an output in other units: `tolerances`, e.g. a detector's boxes in pixels)
OPSET = 17  # the traced exporter's ONNX opset (NMS and the detectors' RoIAlign need 11 and 16 at least)


@dataclass
class Exported:
    path: Path
    meta_path: Path
    max_abs_diff: float
    batch: int
    differences: dict[str, float] | None = None  # the largest difference of each output, where there are several


class Logits(torch.nn.Module):
    """The trained model with the task's output convention applied: the exported graph returns logits (B, C)."""

    def __init__(self, model: torch.nn.Module, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.logits(self.model(x))


class PaddedTextLogits(Logits):
    """A text model on padded token ids: inputs ids (B, T) int64 padded with pad_id, lengths (B,) int64."""

    input_names = ("ids", "lengths")

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        from kiln.data.text import TextBatch

        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        return self.task.logits(self.model(TextBatch(ids, lengths, mask=mask)))


class OffsetsTextLogits(Logits):
    """An EmbeddingBag model on flat token ids: inputs ids (N,) int64 (every text back to back), offsets (B,) int64
    (where each text starts)."""

    input_names = ("ids", "offsets")

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        from kiln.data.text import TextBatch

        lengths = torch.diff(offsets, append=offsets.new_full((1,), ids.shape[0]))
        return self.task.logits(self.model(TextBatch(ids, lengths, offsets=offsets)))


class MaskedTextLogits(Logits):
    """A Hugging Face encoder, fed as transformers' own exports are: input_ids (B, T) int64 padded with pad_id,
    attention_mask (B, T) int64, 1 on real tokens."""

    input_names = ("input_ids", "attention_mask")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        from kiln.data.text import TextBatch

        mask = attention_mask.bool()
        return self.task.logits(self.model(TextBatch(input_ids, mask.sum(1), mask=mask)))


WRAPPERS = {"image": Logits, "pad": PaddedTextLogits, "offsets": OffsetsTextLogits, "masked": MaskedTextLogits}


def export(run_dir: Path | str, fmt: str, *, checkpoint: str = "best", out: Path | None = None,
           overrides: Sequence[str] = ()) -> Exported:
    if fmt not in FORMATS:
        raise KilnError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    trained = load_trained(run_dir, checkpoint, overrides, device="cpu")
    allowed = trained.task.export_formats
    if allowed is not None and fmt not in allowed:
        raise KilnError(f"a {trained.task.name} model cannot be exported as {fmt} yet; --format "
                        f"{' or '.join(allowed)} writes it (kiln predict and kiln test read the run folder itself)")
    if fmt == "safetensors":
        return _safetensors(trained, Path(out) if out else trained.run.path / "model.safetensors")
    model = _graph(trained)
    sample = sample_batch(trained)
    path = Path(out) if out else trained.run.path / f"model{FORMATS[fmt]}"
    meta = metadata(trained, fmt, model)
    tokenizer = _tokenizer_beside(trained, path, meta, model)
    try:
        {"onnx": _onnx, "exported": _exported, "torchscript": _torchscript}[fmt](model, sample, path, meta)
    except KilnError:
        raise
    except Exception as e:  # noqa: BLE001 — an exporter failing on an operation: say which, suggest the others
        path.unlink(missing_ok=True)
        others = ", ".join(f for f in FORMATS if f != fmt)
        reason = re.sub(r"\x1b\[[0-9;]*m", "", first_line(e))[:300]
        if "pack_padded_sequence" in _source(trained.model) and fmt != "torchscript":
            reason = ("the model packs its sequences (pack_padded_sequence), whose shapes depend on the lengths: "
                      "torch.export cannot trace that with a dynamic batch")
            others = "torchscript"
        raise KilnError(f"the model could not be exported as {fmt}: {type(e).__name__}: {reason}; try --format "
                        f"{others}") from None
    diffs = parity(path, fmt, model, sample)
    over = {name: d for name, d in diffs.items() if not d <= tolerance(model, name)}
    if over:
        path.unlink(missing_ok=True)
        raise CheckFailed(f"the {fmt} export does not match the PyTorch model ({_mismatch(model, over)}); the "
                              "file was removed")
    diff = max(diffs.values())
    if tokenizer is not None:
        trained.vocab.save(tokenizer)
    meta_path = path.with_name(path.name + ".json")
    several = diffs if len(diffs) > 1 else None
    meta_path.write_text(json.dumps({**meta, "parity_max_abs_diff": diff, **({"parity": several} if several else {})},
                                    indent=2) + "\n")
    return Exported(path, meta_path, diff, len(sample[-1]), several)


def tolerance(model, output: str) -> float:
    """The largest difference accepted in an output (TOLERANCE unless the graph sets its own)."""
    return getattr(model, "tolerances", {}).get(output, TOLERANCE)


def _mismatch(model, over: dict[str, float]) -> str:
    """Which outputs differ, by how much, against what was accepted (and why a shape may differ)."""
    said = "; ".join(f"{name}: the largest difference {d:.3g} > {tolerance(model, name)}" if d != math.inf
                     else f"{name}: missing or of another shape" for name, d in over.items())
    hint = getattr(model, "shape_hint", "")
    return said + (f" — {hint}" if hint and math.inf in over.values() else "")


def _graph(trained: Trained) -> torch.nn.Module:
    """The module the export holds: the task's own graph of the model (a detector's), else the input layout's
    wrapper returning logits."""
    model = trained.model.float().to(memory_format=torch.contiguous_format)
    own = trained.task.export_graph(model)
    return (own if own is not None else WRAPPERS[_layout(trained)](model, trained.task)).eval()


def _tokenizer_beside(trained: Trained, path: Path, meta: ExportMeta, model) -> Path | None:
    """A model tokenizer's export carries the tokenizer in a folder beside the file (named in the metadata), so
    `kiln predict MODEL.onnx` and any caller encode texts as training did; its token axis is capped at max_len."""
    if _layout(trained) != "masked":
        return None
    folder = path.with_name(path.name + ".tokenizer")
    meta["input"]["tokenizer_dir"] = folder.name
    model.max_tokens = max(meta["input"]["tokenization"]["max_len"], 2)
    return folder


def _source(model: torch.nn.Module) -> str:
    """The source of the model's forward methods (for explaining an export failure); empty when unavailable."""
    import inspect

    texts = []
    for module in model.modules():
        try:
            texts.append(inspect.getsource(type(module).forward))
        except (OSError, TypeError):
            continue
    return "\n".join(texts)


def _layout(trained: Trained) -> str:
    """The exported graph's input layout, as the run's kind of input names it (a key of WRAPPERS)."""
    return inputs_of(trained.info).export_layout(trained.cfg)


def sample_batch(trained: Trained, size: int = 8) -> tuple[torch.Tensor, ...]:
    """The model's inputs for up to `size` real test samples, or a seeded stand-in when the data is not here."""
    try:
        data = trained.test_data(torch.device("cpu"))
        inputs, _ = next(iter(data.require("test").epoch(0)))
        return _first_inputs(inputs, size, _layout(trained))
    except KilnError as e:
        log.warning("checking the export on a stand-in batch (the run's test data is not here: %s)", e)
    layout = _layout(trained)
    return _first_inputs(inputs_of(trained.info).stand_in(trained.info, layout, size), size, layout)


def _first_inputs(inputs: Any, n: int, layout: str) -> tuple[torch.Tensor, ...]:
    """The exported graph's input tensors for the first n samples of a batch."""
    if isinstance(inputs, torch.Tensor):
        return (inputs[:n].contiguous(),)
    if inputs.offsets is None:
        longest = int(inputs.lengths[:n].max())
        ids = inputs.ids[:n, :longest].contiguous()
        if layout == "masked":
            return ids, inputs.mask[:n, :longest].long().contiguous()
        return ids, inputs.lengths[:n].clone()
    end = int(inputs.offsets[n]) if len(inputs.offsets) > n else len(inputs.ids)
    return inputs.ids[:end].clone(), inputs.offsets[:n].clone()


def task_of(meta: ExportMeta) -> Task:
    """The task an export's metadata describes (what turns its outputs into predictions)."""
    from kiln.config import task_config
    from kiln.tasks import build_task, task_class

    name = meta.get("task", "multiclass")
    settings = {key: by_name(meta)[key] for key in task_class(name).exported if key in meta}
    return build_task(task_config(name=name, **settings), len(meta["class_names"]))


def _safetensors(trained: Trained, path: Path) -> Exported:
    """The weights, under the model's own parameter names (what `model.pretrained: FILE.safetensors`, timm and
    Hugging Face load), with what rebuilds the model — its name and args, the classes, the preprocessing — in the
    file's header and in a JSON beside it. Checked by loading the file back into a newly built model."""
    from safetensors.torch import load_file, save_file

    from kiln.models import build_model

    state = {k: v.detach().contiguous() for k, v in trained.model.state_dict().items()}
    meta = metadata(trained, "safetensors")
    meta["model"] = {"name": trained.cfg.model.name, "args": trained.cfg.model.args}
    meta["data_info"] = trained.state.data_info
    save_file(state, str(path), metadata={"kiln": json.dumps(meta)})
    rebuilt = build_model(model_config(trained.run, trained.cfg), trained.info)
    try:
        rebuilt.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        path.unlink(missing_ok=True)
        raise CheckFailed(f"the safetensors file does not load back into {trained.cfg.model.name} "
                              f"({first_line(e)}); the file was removed") from None
    back = rebuilt.state_dict()
    diff = max((float((back[k].float() - v.float()).abs().max()) for k, v in state.items() if v.numel()),
               default=0.0)
    meta_path = path.with_name(path.name + ".json")
    meta_path.write_text(json.dumps({**meta, "parity_max_abs_diff": diff}, indent=2, default=str) + "\n")
    return Exported(path, meta_path, diff, 0)


def metadata(trained: Trained, fmt: str, graph: torch.nn.Module | None = None) -> ExportMeta:
    info = trained.info
    task = trained.cfg.task
    kind = trained.task
    # the settings a task exports (multilabel's threshold, regression's scaling) are keys of ExportMeta
    meta = cast(ExportMeta, {"format": fmt, "task": task.name, "class_names": info.class_names,
                             "output": kind.output_doc, "checkpoint": str(trained.checkpoint),
                             **{key: getattr(task, key) for key in kind.exported}})
    meta["input"] = inputs_of(info).export_input(info, trained.cfg, trained.vocab)
    if graph is not None:
        meta["outputs"] = list(output_names(graph))
        if (fixed := batch_size(graph)) is not None:  # a graph that takes one input at a time says so
            meta["batch_size"] = fixed
            meta["input"]["shape"] = [fixed, *meta["input"]["shape"][1:]]
    return meta


def _input_names(model) -> tuple[str, ...]:
    return getattr(model, "input_names", ("images",))


def output_names(model) -> tuple[str, ...]:
    return getattr(model, "output_names", ("logits",))


def batch_size(model) -> int | None:
    """The batch a graph takes (None: any)."""
    return getattr(model, "batch_size", None)


def _dynamic(model) -> dict[str, Any]:
    """Dynamic dimensions of each input: the batch, and the token axis of text inputs."""
    batch = torch.export.Dim("batch", min=1)
    if isinstance(model, PaddedTextLogits):
        longest = getattr(model.model, "max_len", None)  # a model that cuts texts at max_len caps the axis there
        tokens = torch.export.Dim("tokens", min=1, max=longest) if longest else torch.export.Dim("tokens", min=1)
        return {"ids": {0: batch, 1: tokens}, "lengths": {0: batch}}
    if isinstance(model, OffsetsTextLogits):
        return {"ids": {0: torch.export.Dim("tokens", min=2)}, "offsets": {0: batch}}
    if isinstance(model, MaskedTextLogits):  # capped at the model's position embeddings
        tokens = torch.export.Dim("tokens", min=1, max=getattr(model, "max_tokens", None) or 2**16)
        return {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}
    return {"x": {0: batch}}


def _onnx(model, sample, path: Path, meta: ExportMeta) -> None:
    import onnx

    # One self-contained file unless the weights come near protobuf's 2 GiB limit; then model.onnx.data beside it.
    one_file = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) < ONNX_ONE_FILE
    external: dict[str, Any] = {"external_data": not one_file} \
        if "external_data" in inspect.signature(torch.onnx.export).parameters else {}
    names: dict[str, Any] = {"input_names": list(_input_names(model)), "output_names": list(output_names(model))}
    with warnings.catch_warnings():  # two inputs sharing the batch and token axes is what is meant
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints")
        if getattr(model, "traced", False):  # shapes that follow the data (a detector's boxes): traced, one call
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(model, next(_calls(sample, batch_size(model))), str(path), **names, dynamo=False,
                              opset_version=OPSET)
        else:
            torch.onnx.export(model, sample, str(path), **names, dynamic_shapes=_dynamic(model), dynamo=True,
                              verbose=False, **external)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    data_file = onnx_data_file(path)
    data_file.unlink(missing_ok=True)
    onnx.save(proto, str(path), save_as_external_data=not one_file, location=data_file.name)


def onnx_data_file(path: Path) -> Path:
    """Where an ONNX file's weights lie when they do not fit in it."""
    return path.with_name(path.name + ".data")


def _exported(model, sample, path: Path, meta: ExportMeta) -> None:
    program = torch.export.export(model, sample, dynamic_shapes=_dynamic(model))
    torch.export.save(program, str(path), extra_files={"kiln.json": json.dumps(meta)})


def _torchscript(model, sample, path: Path, meta: ExportMeta) -> None:
    # The tracer's own re-run check trips over kernels that choose a path by the data (a transformer's padded-batch
    # fast path); kiln's parity check below runs the traced file on two batches of other shapes instead.
    traced = torch.jit.trace(model, sample, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"kiln.json": json.dumps(meta)})


def parity(path: Path, fmt: str, model: torch.nn.Module, sample: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """The largest absolute difference of each output between the exported file and the PyTorch model on `sample`
    (and on a batch of another size, so a fixed batch dimension is caught; a graph of one input at a time: input by
    input); infinite where an output's shape differs (a box more or less)."""
    run, fixed, names = exported_runner(path, fmt), batch_size(model), output_names(model)
    diffs, compared = dict.fromkeys(names, 0.0), 0
    for inputs in (sample,) if fixed else (sample, _fewer(model, sample, 3)):
        for call in _calls(inputs, fixed):
            with torch.no_grad():
                expected = _numpy(model(*call))
            got = run(*(x.numpy() for x in call))
            for name, d in _differences(model, expected, got).items():
                diffs[name] = max(diffs[name], d)
            compared += sum(e.size for e in expected)
    if not compared:
        log.warning("the model answered nothing on the %d samples the export was checked on (a detector found no "
                    "boxes): only that the export answers nothing too was checked", len(sample[0]))
    return diffs


def _calls(inputs: tuple[Any, ...], fixed: int | None) -> Any:
    """A batch's inputs as the graph takes them: whole, or `fixed` samples at a time."""
    if fixed is None:
        yield inputs
        return
    for start in range(0, len(inputs[0]), fixed):
        yield tuple(x[start:start + fixed] for x in inputs)


def _numpy(outputs: Any) -> tuple[np.ndarray, ...]:
    return tuple(o.numpy() for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,)))


def _differences(model, expected: tuple[np.ndarray, ...], got: tuple[np.ndarray, ...]) -> dict[str, float]:
    """Each output's largest difference on one call: the graph's own comparison where it has one (a detector's
    boxes compared as sets), else element by element."""
    if hasattr(model, "differences"):
        return model.differences(expected, got)
    return {name: _difference(e, g) for name, e, g in zip(output_names(model), expected, got)}


def _difference(expected: np.ndarray, got: np.ndarray) -> float:
    if expected.shape != got.shape:
        return math.inf
    return float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) if expected.size else 0.0


def _fewer(model, sample: tuple[torch.Tensor, ...], n: int) -> tuple[torch.Tensor, ...]:
    """The first n samples' inputs (text: fewer and shorter sequences, so every dynamic axis is exercised)."""
    if isinstance(model, OffsetsTextLogits):
        ids, offsets = sample
        return ids[:int(offsets[n])], offsets[:n]
    if isinstance(model, PaddedTextLogits):
        ids, lengths = sample
        return ids[:n, :int(lengths[:n].max())], lengths[:n]
    if isinstance(model, MaskedTextLogits):
        ids, mask = sample
        longest = int(mask[:n].sum(1).max())
        return ids[:n, :longest].contiguous(), mask[:n, :longest].contiguous()
    return (sample[0][:n],)


def exported_runner(path: Path, fmt: str) -> Callable[..., tuple[np.ndarray, ...]]:
    """The exported file, loaded once, as a function of its input arrays returning every output (ONNX through
    onnxruntime)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_onnx(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
            feeds = {name: (x.astype(np.float32) if x.dtype.kind == "f" else x) for name, x in zip(names, inputs)}
            return tuple(session.run(None, feeds))

        return run_onnx
    module = torch.export.load(str(path)).module() if fmt == "exported" else torch.jit.load(str(path))

    def run_torch(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            return _numpy(module(*(torch.from_numpy(x) for x in inputs)))

    return run_torch


def graph_outputs(run: Callable[..., tuple[np.ndarray, ...]], meta: ExportMeta, inputs: tuple[np.ndarray, ...]
                  ) -> list[tuple[torch.Tensor, ...]]:
    """An exported graph's outputs for a batch (`run`: its `exported_runner`): one tuple per call (the whole batch,
    or one per input where the graph takes one at a time, as its metadata says) — what `Task.from_graph` reads."""
    return [tuple(torch.from_numpy(o) for o in run(*call)) for call in _calls(inputs, meta.get("batch_size"))]


def onnx_metadata(path: Path) -> ExportMeta:
    """The metadata kiln stored in an exported ONNX file (class names, normalisation, input shape)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 — not an ONNX file
        raise KilnError(f"cannot read {path} as ONNX: {e}") from None
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    if "class_names" not in meta:
        raise KilnError(f"{path} was not exported by kiln export (no class names in its metadata)")
    return cast(ExportMeta, meta)
