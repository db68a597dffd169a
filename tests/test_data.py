import os

import pytest
import torch

from fakedata import write_idx_dataset
from kiln.config import AugmentConfig, DataConfig
from kiln.core.errors import KilnError
from kiln.data import DataRequest, build_data, choose_loader, split_indices
from kiln.data.idx import load_split
from kiln.data.loaders import EpochBatchSampler
from kiln.data.registry import get_dataset, locate
from kiln.data.transforms import Augment, BatchTransform, random_crop

CPU = torch.device("cpu")


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(1000, 0.1, seed=0)
    again_train, again_val = split_indices(1000, 0.1, seed=0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert len(val) == 100 and set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert len(split_indices(1000, 250, seed=0)[1]) == 250
    with pytest.raises(KilnError, match="leaves no training samples"):
        split_indices(100, 100, seed=0)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_shard_an_epoch_disjointly(world_size):
    """Evaluation: the ranks together see every sample exactly once. Training: every rank gets as many
    samples (at most world_size - 1 left out per epoch, different ones each epoch)."""
    def epoch(shuffle, ep):
        seen, sizes = [], []
        for rank in range(world_size):
            s = EpochBatchSampler(103, 10, shuffle=shuffle, drop_last=False, seed=5, rank=rank, world_size=world_size)
            s.set_epoch(ep)
            mine = [i for batch in s for i in batch]
            seen += mine
            sizes.append((len(mine), len(s)))
        return seen, sizes

    seen, _ = epoch(False, 0)
    assert sorted(seen) == list(range(103))
    seen, sizes = epoch(True, 2)
    assert len(set(seen)) == len(seen) == 103 - 103 % world_size and len(set(sizes)) == 1
    assert set(epoch(True, 3)[0]) != set(seen) or world_size == 1


def test_order_depends_on_epoch_and_restarts_mid_epoch():
    s = EpochBatchSampler(64, 8, shuffle=True, drop_last=True, seed=1)
    s.set_epoch(0)
    epoch0 = list(s)
    s.set_epoch(1)
    assert list(s) != epoch0
    s.set_epoch(0, start_batch=3)
    assert list(s) == epoch0[3:]


def test_batches_are_normalised_labelled_and_resumable(idx_root):
    cfg = DataConfig(root=idx_root, batch_size=32, val_split=96, augment=AugmentConfig(crop_padding=2, hflip=True))
    data = build_data(cfg, DataRequest(seed=0, device=CPU))
    assert data.sizes == {"train": 384, "val": 96, "test": 160}
    assert data.info.num_classes == 10 and data.info.in_channels == 1 and data.info.image_size == (28, 28)
    x, y = next(iter(data.val.epoch(0)))
    assert x.shape == (96, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    spec = get_dataset("fashion_mnist")
    raw = (x * spec.std + spec.mean) * 255  # undo the normalisation: back to integer pixels
    assert torch.allclose(raw, raw.round(), atol=1e-3) and raw.min() >= -1e-3 and raw.max() <= 255.001
    full = list(data.train.epoch(4))
    tail = list(data.train.epoch(4, start_batch=5))
    assert len(full) == len(data.train) == 12
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[5:], tail))


def test_labels_stay_aligned_with_images(idx_root):
    data = build_data(DataConfig(root=idx_root, batch_size=16, val_split=0), DataRequest(seed=0, device=CPU, splits=("train",)))
    x, y = next(iter(data.train.epoch(0)))
    # The generated images carry a bright block whose position encodes the class.
    for img, label in zip(x[:, 0], y.tolist()):
        r, c = 3 + 7 * (label // 4), 3 + 6 * (label % 4)
        assert img[r:r + 6, c:c + 6].mean() > img.mean() + 1.0


def test_random_crop_shifts_content_without_changing_it():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for img, src in zip(out[:, 0], x[:, 0]):
        kept = img[img > 0]  # padding is zero, the rest must be a contiguous window of the source
        assert set(kept.tolist()) <= set(src.flatten().tolist())
        nz = img.nonzero()
        window = img[nz[:, 0].min():nz[:, 0].max() + 1, nz[:, 1].min():nz[:, 1].max() + 1]
        rows = torch.nonzero(src == window[0, 0])[0]
        assert torch.equal(src[rows[0]:rows[0] + window.shape[0], rows[1]:rows[1] + window.shape[1]], window)


def test_augmentation_statistics():
    x = torch.zeros(4000, 1, 8, 8, dtype=torch.uint8)
    x[..., :, :4] = 255  # left half bright
    t = BatchTransform(0.0, 1.0, Augment(hflip=True))
    out = t(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 0).float().mean().item()
    assert 0.45 < flipped < 0.55  # p = 0.5
    assert torch.equal(BatchTransform(0.0, 1.0, None)(x), x.float() / 255)  # eval: no augmentation


def test_locate_search_order(tmp_path, monkeypatch):
    spec = get_dataset("fashion_mnist")
    monkeypatch.chdir(tmp_path)
    local = write_idx_dataset(tmp_path / "data" / "fashion_mnist", 20, 10)
    assert locate(spec, None, False) == local
    env = write_idx_dataset(tmp_path / "env" / "fashion_mnist", 20, 10)
    monkeypatch.setenv("KILN_DATA", str(tmp_path / "env"))
    assert locate(spec, None, False) == env
    explicit = write_idx_dataset(tmp_path / "mine", 20, 10)
    assert locate(spec, explicit, False) == explicit
    write_idx_dataset(tmp_path / "tv" / "FashionMNIST" / "raw", 20, 10)  # torchvision's download layout
    images, labels = load_split(spec, locate(spec, tmp_path / "tv", False), "test")
    assert images.shape == (10, 1, 28, 28) and len(labels) == 10


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KILN_DATA", str(tmp_path / "kd"))
    with pytest.raises(KilnError) as e:
        locate(get_dataset("mnist"), None, False)
    msg = str(e.value)
    assert "dataset 'mnist' not found" in msg and os.path.join("kd", "mnist") in msg
    assert "data/mnist" in msg and "data.download=true" in msg


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(KilnError, match=r"unknown dataset 'cifar' — registered datasets: .*fashion_mnist.*mnist"):
        get_dataset("cifar")


@pytest.mark.parametrize("overfit", [0, 2])
def test_resident_and_dataloader_paths_give_identical_batches(idx_root, overfit):
    def batches(loader, split, epoch, start=0):
        cfg = DataConfig(root=idx_root, batch_size=32, val_split=96, loader=loader,
                         augment=AugmentConfig(crop_padding=3, hflip=True))
        data = build_data(cfg, DataRequest(seed=7, device=CPU, channels_last=True, overfit_batches=overfit))
        assert data.loader == loader
        return list(getattr(data, split).epoch(epoch, start))

    for split, epoch, start in (("train", 0, 0), ("train", 3, 1), ("val", 0, 0), ("test", 0, 0)):
        a, b = batches("resident", split, epoch, start), batches("dataloader", split, epoch, start)
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xa.dtype == xb.dtype == torch.float32 and ya.dtype == yb.dtype == torch.int64
            assert xa.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_resident_epoch_visits_every_training_sample_once(idx_root):
    cfg = DataConfig(root=idx_root, batch_size=25, val_split=0, loader="resident")
    data = build_data(cfg, DataRequest(seed=1, device=CPU, splits=("train",)))
    images = data.train.images.view(len(data.train.images), -1).float()
    seen = torch.cat([x.view(len(x), -1) for x, _ in data.train.epoch(2)])
    spec = get_dataset("fashion_mnist")
    seen = ((seen * spec.std + spec.mean) * 255).round()
    assert len(seen) == 475  # 480 samples, drop_last: 19 full batches of 25
    match = (torch.cdist(seen, images) < 1e-3).sum(0)
    assert match.max() == 1 and match.sum() == 475  # no sample twice


def test_auto_loader_respects_the_memory_budget():
    cpu, mb = torch.device("cpu"), 2**20
    assert choose_loader("auto", 50 * mb, cpu, None) == "resident"
    assert choose_loader("auto", 50 * mb, cpu, 10) == "dataloader"
    assert choose_loader("auto", 5 * mb, cpu, 10) == "resident"
    assert choose_loader("dataloader", 1, cpu, None) == "dataloader"
