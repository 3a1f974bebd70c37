"""capslib.robustness: accuracy curves under one transformation at a time."""

from __future__ import annotations

import pytest
import torch

import capslib
from capslib.affine import AffineParameters, affine_transform
from capslib.baselines import baseline_cnn
from capslib.data import mnist, to_tensors
from capslib.robustness import robustness_curve


@pytest.fixture(scope="module")
def digits():
    images, labels = to_tensors(mnist(train=False))
    return images[:300], labels[:300]


def test_the_shipped_capsnet_is_right_untransformed_and_falls_off_with_rotation(digits):
    images, labels = digits
    model = capslib.load_pretrained("cpu")
    curve = robustness_curve(model, images, labels, "rotation", [0, 90], progress=False)
    with torch.no_grad():
        plain = (model(images).lengths.argmax(dim=1) == labels).double().mean()
    assert curve[0] == pytest.approx(float(plain))  # amount 0 is the untransformed test set
    assert curve[0] > 0.98 and curve[1] < 0.5  # a digit on its side is mostly misread


def test_each_amount_transforms_every_image_alike(digits):
    images, labels = digits
    torch.manual_seed(0)
    model = baseline_cnn("cnn-small").eval()
    curve = robustness_curve(model, images[:50], labels[:50], "scale", [0.8, 1.2], batch_size=16, progress=False)
    for k, scale in enumerate((0.8, 1.2)):
        moved = affine_transform(images[:50], AffineParameters.identity(50, scale_x=scale, scale_y=scale))
        with torch.no_grad():
            expected = (model(moved).argmax(dim=1) == labels[:50]).double().mean()
        assert curve[k] == pytest.approx(float(expected))


@pytest.mark.parametrize(
    "part, amounts, message",
    [
        ("spin", [0], r"part must be one of \('rotation'"),
        ("shear", [1.5], r"shear amounts must be a non-empty list within \[-0.99, 0.99\], got \[1.5\]"),
        ("rotation", [], "non-empty"),
    ],
)
def test_bad_requests_say_what_was_expected(digits, part, amounts, message):
    with pytest.raises(ValueError, match=message):
        robustness_curve(baseline_cnn("cnn-small"), *digits, part, amounts, progress=False)
