"""Efficient-CapsNet's training augmentation (capslib.data.augment): each transform does what it says,
is reproducible from its generator, keeps images in range, and refuses what it cannot take."""

import math

import pytest
import torch

from capslib.data.augment import AUGMENTATIONS, augment, random_erase, random_rotation, random_squish
from capslib.data.shift import random_shift
from capslib.training import TrainConfig


def bar(batch: int = 4) -> torch.Tensor:
    """A vertical bar 2 px wide and 12 px tall in the middle of 28x28 images: (B, 1, 28, 28)."""
    x = torch.zeros(batch, 1, 28, 28)
    x[:, :, 8:20, 13:15] = 1.0
    return x


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rotation_turns_about_half_the_images_and_keeps_ink_near_the_centre():
    images = bar(400)
    out = random_rotation(images, generator=generator())
    unchanged = (out - images).abs().flatten(1).amax(dim=1) < 1e-5  # (B,)
    assert 0.4 < unchanged.float().mean() < 0.6  # the coin: half the images
    # A rotation about the centre keeps the ink's centre of mass where it was (within resampling).
    rows = torch.arange(28.0).view(1, 1, 28, 1)
    centre_row = (out * rows).flatten(1).sum(dim=1) / out.flatten(1).sum(dim=1)
    assert torch.allclose(centre_row, torch.full_like(centre_row, 13.5), atol=0.3)


def test_a_rotated_bar_leans():
    # The widest rotation the coin allows (30 degrees) turns a vertical bar so its ends move sideways.
    images = bar(200)
    out = random_rotation(images, max_degrees=30.0, generator=generator(1))
    cols = torch.arange(28.0)
    top = out[:, 0, 8:11].sum(dim=1)  # (B, 28) ink of the top rows, per column
    bottom = out[:, 0, 17:20].sum(dim=1)
    lean = (top * cols).sum(1) / top.sum(1).clamp_min(1e-6) - (bottom * cols).sum(1) / bottom.sum(1).clamp_min(1e-6)
    assert lean.abs().max() > 1.5  # some bars lean by more than a pixel and a half
    assert lean.abs().max() < 12 * math.tan(math.radians(30)) + 1  # none beyond 30 degrees


def test_squish_narrows_the_image_by_one_to_a_quarter_of_its_width():
    images = torch.ones(300, 1, 28, 28)
    out = random_squish(images, generator=generator())
    width = (out[:, 0, 14] > 0.5).sum(dim=1)  # (B,) lit columns of the middle row
    assert width.max() <= 27 and width.min() >= 28 - 7 - 1
    assert (width == 27).any()  # mostly small squeezes


def test_erase_blanks_one_four_by_four_patch_inside_the_border():
    images = torch.ones(500, 1, 28, 28)
    out = random_erase(images, generator=generator())
    erased = out[:, 0] == 0  # (B, 28, 28)
    assert (erased.flatten(1).sum(dim=1) == 16).all()
    rows = erased.any(dim=2).float().argmax(dim=1)  # first erased row
    cols = erased.any(dim=1).float().argmax(dim=1)
    assert rows.min() == 4 and rows.max() == 22 and cols.min() == 4 and cols.max() == 22


def test_augment_is_reproducible_in_range_and_shift_alone_is_the_papers_shift():
    images = torch.rand(16, 1, 28, 28)
    first = augment(images, "efficient", 2, generator=generator(3))
    again = augment(images, "efficient", 2, generator=generator(3))
    assert torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 1 and first.shape == images.shape
    assert not torch.equal(first, augment(images, "efficient", 2, generator=generator(4)))
    # "shift" draws exactly what random_shift draws: runs made before the option existed replay unchanged.
    assert torch.equal(augment(images, "shift", 2, generator=generator(5)), random_shift(images, 2, generator(5)))
    assert torch.equal(augment(images, "shift", 0, generator=generator(5)), images)


@pytest.mark.parametrize("bad", [torch.rand(1, 28, 28), torch.ones(2, 1, 28, 28, dtype=torch.uint8)])
def test_bad_images_are_refused(bad):
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_rotation(bad)


def test_unknown_augmentation_is_refused_by_name_and_by_the_config():
    with pytest.raises(ValueError, match="shift"):
        augment(torch.rand(2, 1, 28, 28), "flip", 2)
    assert AUGMENTATIONS == ("shift", "efficient")
    with pytest.raises(ValueError, match="augment must be one of"):
        TrainConfig(augment="flip").validate()
    with pytest.raises(ValueError, match="multimnist"):
        TrainConfig(augment="efficient", dataset="multimnist").validate()
