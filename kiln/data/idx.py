"""The IDX file format of the MNIST family (LeCun's format), read and written.

Header: two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension; the data follows in C order. Files may be
gzip-compressed. https://yann.lecun.com/exdb/mnist/ (section "File formats").
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kiln.core.errors import KilnError

if TYPE_CHECKING:
    import torch

    from kiln.data.registry import IdxDataset

# type code -> big-endian numpy dtype
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path | str) -> torch.Tensor:
    """Read an IDX file into a tensor (uint8 for image and label files)."""
    import torch

    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise KilnError(f"cannot read {path}: {e} — the file is corrupt or truncated; delete it and get it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise KilnError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'}); "
                        "expected 0x0000 followed by a type code and the number of dimensions")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise KilnError(f"{path} is truncated: its header announces {ndim} dimensions but the file ends early")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise KilnError(f"{path} has {len(data) - header} data bytes but its header {tuple(dims)} needs {expected}: "
                        "the file is truncated or corrupt; delete it and get it again")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: Path | str, tensor: torch.Tensor) -> Path:
    """Write a tensor as an IDX file (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    array = tensor.detach().cpu().numpy()
    code = _CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.dtype(_DTYPES[code]), copy=False).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(path, "wb", compresslevel=1) if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(payload)
    return path


def find_file(folder: Path, stem: str) -> Path | None:
    # torchvision's downloader leaves the files in <root>/<Class>/raw/; EMNIST in .../raw/gzip/.
    for sub in (folder, folder / "raw", folder / "gzip"):
        for name in (stem + ".gz", stem):
            if (sub / name).is_file():
                return sub / name
    return None


def load_split(spec: IdxDataset, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, H, W), labels int64 (N,)) of a registered dataset's train or test split."""
    import torch

    found = {stem: find_file(folder, stem) for stem in spec.files(split)}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise KilnError(f"{folder} lacks {', '.join(missing)} (.gz or uncompressed) of the {split} split; "
                        f"the dataset needs {spec.describe_files()}")
    image_file, label_file = (path for path in found.values() if path is not None)
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != torch.uint8:
        raise KilnError(f"{image_file} should hold uint8 images of shape (N, H, W), not {tuple(images.shape)} "
                        f"{images.dtype}")
    if labels.ndim != 1:
        raise KilnError(f"{label_file} should hold a 1-D list of labels, not shape {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise KilnError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels")
    labels = labels.long() - spec.label_offset
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise KilnError(f"{label_file} has labels outside 0..{spec.num_classes - 1} "
                        f"(found {int(labels.min())}..{int(labels.max())})")
    if spec.transpose:
        images = images.transpose(1, 2).contiguous()
    return images.unsqueeze(1), labels
