"""capslib.analysis.equivariance: exact shifts, rotations checked against torchvision and rot90, the
measurement's bookkeeping (zero transform, zero change), its input checks, and on the shipped
model the claim notebook 00 makes: the reconstruction from the winning capsule moves with the digit."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import functional as tf

import capslib
from capslib.analysis import equivariance as E


@pytest.fixture(scope="module")
def small_model():
    """A small random CapsNet with a decoder: the bookkeeping does not need trained weights."""
    torch.manual_seed(0)
    return capslib.CapsNet(conv_channels=16, num_types=4, in_dim=8, out_dim=16).eval()


@pytest.fixture(scope="module")
def digits():
    """Four blobs in [0, 1] that keep a 6-pixel empty border, like centred MNIST digits."""
    images = torch.zeros(4, 1, 28, 28)
    images[:, :, 6:22, 6:22] = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    return images


def test_shift_moves_every_pixel_exactly(digits):
    moved = E.shift_image(digits, dx=3, dy=-2)
    torch.testing.assert_close(moved[..., 4:20, 9:25], digits[..., 6:22, 6:22], rtol=0, atol=0)
    torch.testing.assert_close(moved.sum(dim=(1, 2, 3)), digits.sum(dim=(1, 2, 3)))  # nothing left the image
    shift = E.centre_of_mass(moved) - E.centre_of_mass(digits)  # (B, 2)
    torch.testing.assert_close(shift, torch.tensor([[3.0, -2.0]]).expand(4, 2))
    assert torch.equal(E.shift_image(moved, dx=-3, dy=2), digits)  # and back, exactly


def test_shift_zero_fills_and_never_wraps():
    image = torch.zeros(1, 5, 5)
    image[0, 2, 4] = 1.0  # one bright pixel at the right edge (row 2, column 4)
    assert E.shift_image(image, dx=1).sum() == 0  # pushed over the edge: gone, not wrapped to column 0
    left = E.shift_image(image, dx=-4)
    assert left[0, 2, 0] == 1.0 and left.sum() == 1.0
    assert torch.equal(E.shift_image(image, 0, 0), image)
    assert E.shift_image(image, 0, 0) is not image  # a copy


def test_rotation_matches_rot90_and_torchvision(digits):
    assert torch.equal(E.rotate_image(digits, 0), digits)
    for degrees in (90, -90, 180):
        expected = torch.rot90(digits, k=round(degrees / 90), dims=(-2, -1))  # counter-clockwise as displayed
        torch.testing.assert_close(E.rotate_image(digits, degrees), expected, rtol=0, atol=1e-5)
    for degrees in (10.0, -33.0, 57.5):  # an independent implementation of the same convention
        expected = tf.rotate(digits, degrees, interpolation=tf.InterpolationMode.BILINEAR)
        torch.testing.assert_close(E.rotate_image(digits, degrees), expected, rtol=0, atol=1e-4)


def test_orientation_follows_a_rotated_bar():
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 13:15, 4:24] = 1.0  # a horizontal bar: axis at 0 degrees
    assert abs(float(E.orientation(bar))) < 1e-4
    for degrees in (20.0, 45.0, -30.0, 80.0):
        turned = E.orientation(E.rotate_image(bar, degrees))
        assert abs(float(E.angle_difference(turned, torch.tensor(degrees)))) < 0.5, (degrees, float(turned))
    assert float(E.angle_difference(torch.tensor(85.0), torch.tensor(-85.0))) == pytest.approx(-10.0)


def test_transform_digit_rotates_then_shifts(digits):
    expected = E.shift_image(E.rotate_image(digits[0], 30), dx=2, dy=1)
    assert torch.equal(E.transform_digit(digits[0], shift=(2, 1), rotation=30), expected)
    assert torch.equal(E.transform_digit(digits), digits)


def test_relative_change():
    old = torch.tensor([[3.0, 4.0]])  # length 5
    assert E.relative_change(old, old).item() == 0.0
    assert E.relative_change(torch.tensor([[3.0, 9.0]]), old).item() == pytest.approx(1.0)
    assert E.relative_change(torch.stack([old, 2 * old]), old).shape == (2, 1)  # (A, B, F) against (B, F)


def test_zero_transform_gives_zero_change(small_model, digits):
    for kind, amounts in (("shift", [0, 2]), ("rotate", [0.0, 15.0])):
        result = E.measure_equivariance(small_model, digits, kind, amounts)
        for key in ("change_pooled", "change_pooled_primary", "change_pose", "change_length", "change_image"):
            assert result[key].shape == (2, 4)
            assert torch.equal(result[key][0], torch.zeros(4)), (kind, key)
            assert (result[key][1] >= 0).all(), (kind, key)
        assert (result["change_image"][1] > 0).all() and (result["change_pose"][1] > 0).all()
        torch.testing.assert_close(result["reconstructions"][0], result["reconstruction_reference"])
        assert torch.equal(result["input_motion"][0], torch.zeros(4))


def test_measurement_shapes_and_bookkeeping(small_model, digits):
    result = E.measure_equivariance(small_model, digits, "shift", [-2, 0, 3], batch_size=3)
    assert result["images"].shape == (3, 4, 1, 28, 28)
    assert result["pooled"].shape == (3, 4, 16) and result["pooled_primary"].shape == (3, 4, 32)
    assert result["poses"].shape == (3, 4, 16) and result["lengths"].shape == (3, 4)
    assert result["reconstructions"].shape == (3, 4, 1, 28, 28)
    assert torch.equal(result["images"][2], E.shift_image(digits, dx=3))
    torch.testing.assert_close(result["input_motion"][:, 0], torch.tensor([-2.0, 0.0, 3.0]))
    with torch.no_grad():
        out = small_model(digits)
        conv1 = torch.relu(small_model.conv1(digits))  # (B, 16, 20, 20)
        primary = small_model.primary_caps.inner(conv1)  # (B, 32, 6, 6)
    assert torch.equal(result["classes"], out.predictions)
    torch.testing.assert_close(result["pooled_reference"], conv1.amax(dim=(2, 3)))
    torch.testing.assert_close(result["pooled_primary_reference"], primary.amax(dim=(2, 3)))
    rows = torch.arange(4)
    torch.testing.assert_close(result["pose_reference"], out.poses[rows, out.predictions])
    torch.testing.assert_close(result["poses"][1], out.poses[rows, out.predictions])
    # the batch size only splits the work
    one_by_one = E.measure_equivariance(small_model, digits, "shift", [-2, 0, 3], batch_size=1)
    torch.testing.assert_close(one_by_one["change_pose"], result["change_pose"])


def test_model_mode_is_restored(digits):
    torch.manual_seed(0)
    model = capslib.CapsNet(conv_channels=16, num_types=4).train()
    E.measure_equivariance(model, digits[:2], "rotate", [10])
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="scale", amounts=[1]), r"kind must be one of \('shift', 'rotate'\), got 'scale'"),
        (dict(kind="shift", amounts=[1.5]), "shift amounts must be whole pixels"),
        (dict(kind="shift", amounts=[15]), r"must lie in \[-14, 14\] pixels"),
        (dict(kind="rotate", amounts=[200]), r"must lie in \[-180, 180\] degrees"),
        (dict(kind="rotate", amounts=[]), "at least one"),
        (dict(kind="rotate", amounts=[float("nan")]), "finite"),
    ],
)
def test_bad_amounts_raise(small_model, digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        E.measure_equivariance(small_model, digits, **kwargs)


def test_bad_images_and_models_raise(small_model, digits):
    with pytest.raises(
        ValueError, match=r"shape \(B, 1, 28, 28\) or \(1, 28, 28\) for this model, got \(4, 1, 32, 32\)"
    ):
        E.measure_equivariance(small_model, torch.zeros(4, 1, 32, 32), "shift", [1])
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(B, C, H, W\), got \(28, 28\)"):
        E.measure_equivariance(small_model, torch.zeros(28, 28), "shift", [1])
    with pytest.raises(ValueError, match="needs a model with a decoder"):
        E.measure_equivariance(
            capslib.CapsNet(conv_channels=16, num_types=4, reconstruction=False), digits, "shift", [1]
        )
    with pytest.raises(ValueError, match="whole number of pixels"):
        E.shift_image(digits, dx=0.5)
    with pytest.raises(ValueError, match=r"dy must lie in \[-28, 28\]"):
        E.shift_image(digits, dy=29)
    with pytest.raises(ValueError, match=r"degrees must be a finite angle in \[-180, 180\], got 181"):
        E.rotate_image(digits, 181)
    with pytest.raises(ValueError, match="shift must be a pair"):
        E.transform_digit(digits, shift=3)
    with pytest.raises(ValueError, match="floating point"):
        E.rotate_image(torch.zeros(1, 28, 28, dtype=torch.uint8), 10)


def test_shipped_model_reconstruction_follows_a_small_shift(mnist_test_tensors):
    """Notebook 00's claim, on 20 real test digits: the decoded pose moves with a 2-pixel shift."""
    images, _ = mnist_test_tensors
    model = capslib.load_pretrained("cpu")
    result = E.measure_equivariance(model, images[:20], "shift", [-2, 2])
    moved = result["reconstruction_motion"].median(dim=1).values  # (2,)
    torch.testing.assert_close(moved, torch.tensor([-2.0, 2.0]), rtol=0, atol=0.35)
    assert (result["change_pose"].mean(dim=1) > result["change_pooled"].mean(dim=1)).all()
