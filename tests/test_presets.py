"""Augmentation presets (RandAugment, TrivialAugment, AugMix) and random erasing: drawn per image, seeded by the
batch's generator (so a resume repeats them), and leaving torch's global generator as it was."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from kiln.config import Config
from kiln.data.transforms import Augment, BatchTransform


@pytest.mark.parametrize("preset", ["randaugment", "trivialaugment", "augmix"])
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_draw_per_image_and_repeat_for_the_same_batch(preset, channels):
    transform = BatchTransform([0.5] * channels, [0.25] * channels, Augment(preset=preset, random_erasing=0.5),
                               size=(16, 16))
    images = torch.randint(0, 256, (1, channels, 16, 16), dtype=torch.uint8).repeat(16, 1, 1, 1)
    plain = BatchTransform([0.5] * channels, [0.25] * channels)(images)
    before = torch.random.get_rng_state()
    a = transform(images, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), before)  # dropout's generator untouched
    assert torch.equal(a, transform(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, transform(images, torch.Generator().manual_seed(2)))
    changed = [not torch.equal(a[i], plain[i]) for i in range(16)]
    assert sum(changed) >= 8  # most images changed ...
    assert len({a[i].sum().item() for i in range(16)}) > 4  # ... each its own way, from one image repeated


def test_random_erasing_replaces_a_box_with_noise_at_its_probability():
    transform = BatchTransform([0.5], [0.25], Augment(random_erasing=0.5), size=(16, 16))
    images = torch.full((200, 1, 16, 16), 128, dtype=torch.uint8)
    out = transform(images, torch.Generator().manual_seed(0))
    plain = BatchTransform([0.5], [0.25])(images)
    erased = (out != plain).flatten(1)
    assert 60 < int(erased.any(1).sum()) < 140  # about half the images
    area = erased.sum(1)[erased.any(1)].float() / 256
    assert area.min() >= 0.015 and area.max() <= 0.36  # a box of 2 % to 33 % of the image (rounded to pixels)


def test_a_preset_trains_and_resumes_bit_exact_mid_epoch(tmp_path, idx_root):
    from conftest import assert_resumes_bit_exact

    def config_for(folder: str) -> Config:
        return Config.model_validate(tiny_config(tmp_path / folder, idx_root, trainer={"epochs": 2}, data={
            "augment": {"preset": "trivialaugment", "random_erasing": 0.25}}))

    assert_resumes_bit_exact(config_for, stop_at=4)
