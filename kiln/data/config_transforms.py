"""Per-image transforms named in the config (`data.transforms.train` / `.eval`): torchvision.transforms.v2 classes
(or your own `package.module:Class`), built and tried on one image before training starts.

They run on each uint8 image (C, H, W) as it is fetched — in DataLoader workers when data.num_workers > 0 — so
every image draws its own random parameters (v2 applied to a batched tensor would give one crop to the whole
batch). Their randomness is seeded from (seed, epoch, batch): a resumed run sees the same images. kiln
normalises afterwards (data.mean / data.std), so the list ends with uint8 images of data.image_size.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from kiln.core.errors import KilnError
from kiln.core.user_code import names_code
from kiln.data.transforms import seed_for

NOT_HERE = {"Normalize": "kiln normalises after your transforms: set data.mean / data.std instead",
            "ToTensor": "images arrive as uint8 tensors already", "PILToTensor": "images arrive as tensors already",
            "ToImage": "images arrive as tensors already", "ToPILImage": "images stay tensors"}


def build_pipeline(entries: Sequence[dict[str, Any]], key: str):
    """A v2.Compose of the configured entries; every name and argument checked, with the valid ones in the
    message."""
    from torchvision.transforms import v2

    return v2.Compose([_build_one(dict(entry), f"{key}[{i}]") for i, entry in enumerate(entries)])


def _build_one(entry: dict[str, Any], where: str):
    from torchvision.transforms import v2

    name = entry.pop("name", None)
    if not isinstance(name, str):
        raise KilnError(f"{where}: each transform is a mapping with a `name` (e.g. {{name: RandomResizedCrop, "
                        "size: 224}})")
    if name in NOT_HERE:
        raise KilnError(f"{where}: {name} is not used here: {NOT_HERE[name]}")
    if names_code(name):
        from kiln.core.user_code import resolve

        cls = resolve(where, name, torch.nn.Module, functions=False)
    else:
        cls = getattr(v2, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, v2.Transform)):
            valid = valid_names()
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" — did you mean {close[0]}?" if close else ""
            raise KilnError(f"{where}: unknown transform {name!r}{hint} Valid names (torchvision.transforms.v2): "
                            f"{', '.join(valid)}; or your own as package.module:Class")
    try:
        return cls(**entry)
    except (TypeError, ValueError) as e:
        raise KilnError(f"{where}: {name}({', '.join(f'{k}={v!r}' for k, v in entry.items())}) failed: {e}. "
                        f"Its signature: {name}{inspect.signature(cls)}") from None


def valid_names() -> list[str]:
    from torchvision.transforms import v2

    return sorted(n for n in dir(v2) if n[0].isupper() and n not in NOT_HERE and inspect.isclass(getattr(v2, n))
                  and issubclass(getattr(v2, n), v2.Transform) and n != "Transform")


class PerImage:
    """Applies a pipeline to each image of a batch, seeded per batch, and checks what comes out."""

    def __init__(self, pipeline, seed: int, size: tuple[int, int], key: str):
        self.pipeline, self.seed, self.size, self.key = pipeline, seed, size, key

    def __call__(self, images: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for(self.seed, epoch, batch, 0x7F0A))
            return torch.stack([self.one(img) for img in images])

    def one(self, image: torch.Tensor) -> torch.Tensor:
        out = self.pipeline(image)
        if not isinstance(out, torch.Tensor) or out.ndim != 3:
            raise KilnError(f"{self.key} must turn an image into an image tensor (C, H, W), not "
                            f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
        if out.is_floating_point():  # e.g. after ToDtype(float32, scale=True): back to the uint8 kiln normalises
            if out.min() < -1e-3 or out.max() > 1 + 1e-3:
                raise KilnError(f"{self.key} gives values outside [0, 1] (a normalisation?); kiln normalises "
                                "afterwards, so end with uint8 or [0, 1] images")
            out = out.mul(255).round_().to(torch.uint8)
        if tuple(out.shape[1:]) != self.size or out.shape[0] != image.shape[0]:
            raise KilnError(f"{self.key} gives {tuple(out.shape)} images; the model takes "
                            f"{(image.shape[0], *self.size)} (data.image_size). End the list with a crop or resize "
                            "to that size")
        return out

    def check(self, sample: torch.Tensor) -> None:
        """Run on one image before training starts, so a bad list fails now rather than mid-epoch."""
        self(sample[None], 0, 0)
