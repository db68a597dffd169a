import gzip

import pytest
import torch

from fakedata import write_idx_dataset
from kiln.core.errors import KilnError
from kiln.data.idx import load_split, read_idx, write_idx
from kiln.data.registry import get_dataset


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.float32])
def test_round_trip(tmp_path, name, dtype):
    tensor = (torch.arange(2 * 3 * 4) * 7 % 251).reshape(2, 3, 4).to(dtype)
    back = read_idx(write_idx(tmp_path / name, tensor))
    assert back.dtype == dtype and torch.equal(back, tensor)


def test_header_is_the_real_format(tmp_path):
    write_idx(tmp_path / "labels", torch.tensor([1, 2, 3], dtype=torch.uint8))
    raw = (tmp_path / "labels").read_bytes()
    assert raw == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 1, 2, 3])  # magic 0x00000801, count 3, data


def test_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04not idx at all")
    with pytest.raises(KilnError, match=r"train-images-idx3-ubyte.*not an IDX file"):
        read_idx(path)


def test_truncated_file(tmp_path):
    path = write_idx(tmp_path / "imgs", torch.zeros(5, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(KilnError, match=r"imgs.*truncated or corrupt"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "imgs.gz", torch.randint(0, 255, (50, 28, 28), dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(KilnError, match=r"imgs.gz"):
        read_idx(path)


def test_label_count_mismatch(tmp_path):
    folder = write_idx_dataset(tmp_path, n_train=40, n_test=10)
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.zeros(39, dtype=torch.uint8))
    with pytest.raises(KilnError, match=r"40 images but .*39 labels"):
        load_split(get_dataset("fashion_mnist"), folder, "train")


def test_labels_out_of_range(tmp_path):
    folder = write_idx_dataset(tmp_path, n_train=40, n_test=10)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", torch.full((10,), 12, dtype=torch.uint8))
    with pytest.raises(KilnError, match=r"labels outside 0..9"):
        load_split(get_dataset("fashion_mnist"), folder, "test")


def test_plain_and_gzip_files_load_the_same(tmp_path):
    a = load_split(get_dataset("fashion_mnist"), write_idx_dataset(tmp_path / "a", gz=True), "train")
    b = load_split(get_dataset("fashion_mnist"), write_idx_dataset(tmp_path / "b", gz=False), "train")
    assert a[0].shape == (480, 1, 28, 28) and a[0].dtype == torch.uint8 and a[1].dtype == torch.int64
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert gzip.open(tmp_path / "a" / "train-images-idx3-ubyte.gz").read(4) == b"\x00\x00\x08\x03"
