"""Look inside a model with forward hooks: a layer table, and intermediate activations (feature maps).

Hooks are always removed afterwards, whatever happens during the forward pass.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.train.step import forward


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    trainable: str  # yes | no | partly | -


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def selected(model: nn.Module, pattern: str | None) -> list[tuple[str, nn.Module]]:
    """Modules whose name matches `pattern` (fnmatch); by default every leaf module."""
    modules = [(n, m) for n, m in model.named_modules() if n]
    if pattern is None:
        return [(n, m) for n, m in modules if not list(m.children())]
    return [(n, m) for n, m in modules if fnmatch.fnmatch(n, pattern)]


@contextmanager
def capture(modules: list[tuple[str, nn.Module]]) -> Iterator[dict[str, torch.Tensor]]:
    """Record each module's output (detached) during the block; the hooks go away on exit."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            tensor = _first_tensor(output)
            if tensor is not None:
                outputs[name] = tensor.detach()
        return hook

    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(hook_for(name)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def layer_table(model: nn.Module, inputs: Any, pattern: str | None = None) -> tuple[list[LayerRow], dict]:
    """Run one batch through `model` in eval mode; return the table and the captured activations."""
    modules = selected(model, pattern)
    was_training = model.training
    model.eval()
    try:
        with capture(modules) as outputs, torch.no_grad():
            forward(model, inputs)
    finally:
        model.train(was_training)
    rows = []
    for name, module in modules:
        params = list(module.parameters(recurse=bool(list(module.children()))))
        grads = {p.requires_grad for p in params}
        trainable = "-" if not params else ("partly" if len(grads) > 1 else ("yes" if grads.pop() else "no"))
        out = outputs.get(name)
        rows.append(LayerRow(name, type(module).__name__, tuple(out.shape) if out is not None else None,
                             sum(p.numel() for p in params), trainable))
    return rows, outputs


def save_activations(outputs: dict[str, torch.Tensor], folder: Path, max_maps: int = 16) -> list[Path]:
    """Each layer's activations as .pt, and 4-D ones (B, C, H, W) as a PNG grid of sample 0's feature maps."""
    from kiln.viz.style import SEQUENTIAL, figure, save

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, tensor in outputs.items():
        stem = folder / name.replace("/", "_")
        torch.save(tensor.cpu(), stem.with_suffix(".pt"))
        written.append(stem.with_suffix(".pt"))
        if tensor.ndim != 4:
            continue
        maps = tensor[0, :max_maps].float().cpu()  # (C', H, W) of the first sample
        cols = min(4, len(maps))
        rows = -(-len(maps) // cols)
        fig, axes = figure(rows, cols, figsize=(2.2 * cols, 2.2 * rows + 0.6), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.grid(False)
            ax.set_xticks([])
            ax.set_yticks([])
            if i < len(maps):
                ax.imshow(maps[i], cmap=SEQUENTIAL)
                ax.set_title(f"channel {i}", fontsize=9, fontweight="normal")
            else:
                ax.axis("off")
        fig.suptitle(f"{name}: {len(maps)} of {tensor.shape[1]} feature maps of sample 0 "
                     f"({tensor.shape[2]}×{tensor.shape[3]} px, brighter = stronger activation)", fontsize=10)
        written += save(fig, stem)
    return written
