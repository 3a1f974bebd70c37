"""capslib.data.affine and data.affine_mnist: exact transformations, the fixed seeded affine test set."""

from __future__ import annotations

import hashlib

import pytest
import torch

from capslib.data import affine_mnist
from capslib.data.affine import (
    AFFNIST_RANGES,
    AffineParameters,
    AffineRanges,
    affine_transform,
    random_affine_parameters,
)

CHECKSUM = "388bcffa07a814417743b59436f94bc1d74c9fcec027dcf9bf8236bf027342ee"  # of the drawn parameters


def dot(row: int, col: int, size: int = 28) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[0, 0, row, col] = 1.0
    return image


def test_the_identity_is_exact():
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(affine_transform(images, AffineParameters.identity(3)), images, atol=1e-5, rtol=0)


def test_whole_pixel_translations_move_pixels_exactly():
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    moved = affine_transform(images, AffineParameters.identity(2, translate_x=3, translate_y=-2))
    expected = torch.zeros_like(images)
    expected[..., : 28 - 2, 3:] = images[..., 2:, : 28 - 3]  # right 3, up 2
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)


def test_a_positive_rotation_turns_counter_clockwise_as_displayed():
    # A dot right of the centre (13.5, 13.5) moves above it: col 20, row 13 -> col 13, row 7.
    turned = affine_transform(dot(13, 20), AffineParameters.identity(1, rotation=90))
    assert turned[0, 0].argmax().item() == 7 * 28 + 13
    assert turned.max().item() == pytest.approx(1.0, abs=1e-5)


def test_a_positive_shear_leans_the_top_to_the_right():
    # 6.5 px above the centre (row 7) moves right by 0.5 * 6.5 = 3.25 px; the centre row stays.
    top = affine_transform(dot(7, 13), AffineParameters.identity(1, shear=0.5))[0, 0]
    cols = (top.sum(dim=0) * torch.arange(28.0)).sum() / top.sum()
    assert cols.item() == pytest.approx(13 + 3.25, abs=0.05)


def test_scaling_is_about_the_centre():
    image = torch.zeros(1, 1, 28, 28)
    image[..., 12:16, 12:16] = 1.0  # a 4x4 square round the centre
    bigger = affine_transform(image, AffineParameters.identity(1, scale_x=2.0, scale_y=2.0))
    assert bigger.sum().item() == pytest.approx(4 * image.sum().item(), rel=0.05)
    centre = (bigger[0, 0] * torch.arange(28.0)[:, None]).sum() / bigger.sum()
    assert centre.item() == pytest.approx(13.5, abs=1e-4)


def test_the_affine_test_set_is_fixed_seeded_and_within_affnist_ranges():
    dataset, params = affine_mnist()
    again, params_again = affine_mnist()
    assert len(dataset) == 10_000 and len(params) == 10_000
    assert torch.equal(dataset.tensors[0], again.tensors[0]) and torch.equal(params.rotation, params_again.rotation)
    assert params.rotation.abs().max() <= 20 and params.shear.abs().max() <= 0.2
    for scale in (params.scale_x, params.scale_y):
        assert 0.8 <= scale.min() and scale.max() <= 1.2
    assert params.translate_x.abs().max() <= 2 and params.translate_y.abs().max() <= 2
    # the same draw on every machine: a checksum of all 60,000 numbers to 1e-6, and the pixel total
    parts = ("rotation", "shear", "scale_x", "scale_y", "translate_x", "translate_y")
    drawn = torch.stack([getattr(params, name) for name in parts]).mul(1e6).round().long()  # (6, 10000)
    assert hashlib.sha256(drawn.numpy().tobytes()).hexdigest() == CHECKSUM
    assert params.rotation[0].item() == pytest.approx(18.8021, abs=1e-4)
    images = dataset.tensors[0]
    assert images.sum().item() == pytest.approx(1_037_121.0, abs=5.0)
    assert images.shape == (10_000, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert not torch.equal(affine_mnist(seed=1)[1].rotation, params.rotation)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: AffineRanges(rotation=200), r"rotation must lie in \[0, 180\] degrees, got 200"),
        (lambda: AffineRanges(shear=1.0), r"shear must lie in \[0, 1\)"),
        (lambda: AffineRanges(scale=(1.2, 0.8)), r"scale must be \(low, high\) with 0 < low <= high <= 3"),
        (lambda: AffineRanges(translation=20), r"translation must lie in \[0, 14\] pixels"),
        (lambda: AffineRanges(rotation=float("nan")), "rotation"),
        (lambda: AffineParameters.identity(1, spin=3), r"unknown transformation parts \['spin'\]"),
        (lambda: random_affine_parameters(2, ranges={"rotation": 20}), "ranges must be an AffineRanges"),
        (lambda: affine_transform(torch.rand(28, 28), AffineParameters.identity(1)), r"\(B, C, H, W\)"),
        (lambda: affine_transform(torch.rand(2, 1, 28, 28), AffineParameters.identity(3)), "3 transformations for 2"),
    ],
)
def test_bad_ranges_and_inputs_say_what_was_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_default_ranges_are_affnists():
    assert (AFFNIST_RANGES.rotation, AFFNIST_RANGES.shear, AFFNIST_RANGES.scale) == (20.0, 0.2, (0.8, 1.2))
