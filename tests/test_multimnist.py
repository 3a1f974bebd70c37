"""capslib.data.multimnist: the authors' pair generator, vectorised; a fixed, checksummed test set."""

from __future__ import annotations

import hashlib

import pytest
import torch

from capslib.data import shift_images
from capslib.data.multimnist import (
    CANVAS,
    MAX_SHIFT,
    at_least_one_right,
    both_right,
    make_pair,
    multimnist_test_set,
    pair_batch,
)

TEST_SET_CHECKSUM = "2bf8383c18ee63910d82030bdfdcf960d4138a00226b3842ce959ed3db7a9ba0"  # labels and shifts


@pytest.fixture(scope="module")
def test_digits(mnist_test_tensors):
    return mnist_test_tensors  # (10000, 1, 28, 28), (10000,)


def placed(digit: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """A 28x28 digit put on the 36x36 canvas and shifted, by slicing: the definition, written out."""
    canvas = torch.zeros(1, CANVAS, CANVAS)
    canvas[:, 4 + dy : 32 + dy, 4 + dx : 32 + dx] = digit
    return canvas


def test_a_pair_is_the_two_shifted_digits_added_and_clipped(test_digits):
    images, labels = test_digits
    a, b = 0, 1  # a 7 and a 2
    pair = make_pair(images[a], labels[a], images[b], labels[b], first_shift=(-4, 3), second_shift=(2, -1))
    assert pair.images.shape == (1, 1, 36, 36) and pair.labels.tolist() == [[7, 2]]
    torch.testing.assert_close(pair.first[0], placed(images[a], -4, 3))
    torch.testing.assert_close(pair.second[0], placed(images[b], 2, -1))
    torch.testing.assert_close(pair.images, (pair.first + pair.second).clamp(0, 1))  # added, not max
    overlap = (pair.first > 0) & (pair.second > 0)
    assert overlap.any() and (pair.images[overlap] >= torch.maximum(pair.first, pair.second)[overlap]).all()


def test_random_batches_pair_different_classes_within_the_shift_range(test_digits):
    images, labels = test_digits
    pairs = pair_batch(images, labels, 512, torch.Generator().manual_seed(0))
    assert pairs.images.shape == (512, 1, 36, 36) and pairs.labels.shape == (512, 2)
    assert (pairs.labels[:, 0] != pairs.labels[:, 1]).all()
    assert pairs.shifts.abs().max() <= MAX_SHIFT and pairs.shifts.abs().max() == MAX_SHIFT  # the range is used
    assert pairs.images.min() >= 0 and pairs.images.max() <= 1
    again = pair_batch(images, labels, 512, torch.Generator().manual_seed(0))
    assert torch.equal(again.images, pairs.images)  # the generator's state decides everything
    other = pair_batch(images, labels, 512, torch.Generator().manual_seed(1))
    assert not torch.equal(other.labels, pairs.labels)


def test_the_fixed_test_set_is_the_same_on_every_machine(test_digits):
    images, labels = test_digits
    test_set = multimnist_test_set(images, labels)
    assert len(test_set) == 10_000 and torch.equal(test_set.labels[:, 0], labels)  # each test digit first, in order
    assert (test_set.labels[:, 0] != test_set.labels[:, 1]).all()
    drawn = torch.cat([test_set.labels.flatten(), test_set.shifts.flatten()])
    assert hashlib.sha256(drawn.numpy().tobytes()).hexdigest() == TEST_SET_CHECKSUM
    assert test_set.images.sum().item() == pytest.approx(1_827_971.25, abs=1.0)
    assert len(multimnist_test_set(images[:100], labels[:100], pairs_per_digit=3)) == 300


def test_shift_images_moves_each_image_by_its_own_shift():
    images = torch.rand(3, 1, 8, 8)
    shifts = torch.tensor([[0, 0], [1, -2], [-3, 3]])
    out = shift_images(images, shifts, max_shift=3)
    torch.testing.assert_close(out[0], images[0])
    torch.testing.assert_close(out[1, :, 1:, :6], images[1, :, :7, 2:])
    assert out[1, :, 0].abs().sum() == 0 and out[1, :, :, 6:].abs().sum() == 0
    torch.testing.assert_close(out[2, :, :5, 3:], images[2, :, 3:, :5])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x, y: make_pair(x[0], 7, x[17], 7), "two different classes, got 7 twice"),
        (lambda x, y: make_pair(x[0], 7, x[1], 2, first_shift=(5, 0)), r"shifts must lie in \[-4, 4\] pixels"),
        (lambda x, y: pair_batch(x[:, :, :20], y, 4, torch.Generator()), r"\(N, 1, 28, 28\), got \(10000, 1, 20, 28\)"),
        (lambda x, y: pair_batch(x[y == 3], y[y == 3], 4, torch.Generator()), "at least two classes"),
        (lambda x, y: pair_batch(x, y[:5], 4, torch.Generator()), r"labels must be \(N,\) = \(10000,\)"),
        (lambda x, y: pair_batch((x * 255).byte(), y, 4, torch.Generator()), "floating point"),
        (lambda x, y: multimnist_test_set(x, y, pairs_per_digit=0), "pairs_per_digit must be >= 1"),
        (lambda x, y: shift_images(x[:2], torch.tensor([[5, 0], [0, 0]]), 4), r"\[-4, 4\] pixels, got up to 5"),
    ],
)
def test_bad_input_says_what_was_expected(test_digits, call, message):
    with pytest.raises(ValueError, match=message):
        call(*test_digits)


def test_the_metric_wants_both_digits_and_context_counts_one():
    lengths = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.9, 0.1, 0.8, 0.0], [0.1, 0.2, 0.9, 0.8]])
    labels = torch.tensor([[1, 0], [0, 1], [0, 1]])  # either order counts
    assert both_right(lengths, labels).tolist() == [True, False, False]
    assert at_least_one_right(lengths, labels).tolist() == [True, True, False]
    with pytest.raises(ValueError, match=r"labels \(B, 2\), got \(3, 4\) and \(3,\)"):
        both_right(lengths, labels[:, 0])


def test_capsnet_at_36x36_routes_3200_capsules_and_reconstructs_each_digit(test_digits):
    import capslib

    images, labels = test_digits
    torch.manual_seed(0)
    model = capslib.CapsNet(image_shape=(1, 36, 36)).eval()
    assert model.primary_grid == (10, 10) and model.digit_caps.weight.shape[0] == 3200  # 32 types x 10 x 10
    pairs = pair_batch(images, labels, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(pairs.images, pairs.labels)
        assert out.coupling.shape == (3, 3200, 10) and out.reconstructions.shape == (3, 2, 1, 36, 36)
        for k in range(2):  # each reconstruction is the decoder masked by that digit's label
            torch.testing.assert_close(out.reconstructions[:, k], model.decoder(out.poses, pairs.labels[:, k]))
        assert model(pairs.images).reconstructions.shape == (3, 1, 36, 36)  # no labels: the predicted class
    with pytest.raises(ValueError, match=r"labels must be \(B,\) or \(B, K\) with B = 3, got \(2, 2\)"):
        model(pairs.images, pairs.labels[:2])
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 36, 36\), got \(3, 1, 28, 28\)"):
        model(images[:3])


def test_evaluate_multimnist_scores_both_digits(test_digits):
    import capslib
    from capslib.evaluation.accuracy import evaluate_multimnist

    images, labels = test_digits
    torch.manual_seed(0)
    model = capslib.CapsNet(image_shape=(1, 36, 36), conv_channels=16, num_types=4, in_dim=8, out_dim=8)
    pairs = multimnist_test_set(images[:40], labels[:40])
    scored = evaluate_multimnist(model, pairs, batch_size=16, progress=False)
    with torch.no_grad():
        lengths = model.eval()(pairs.images).lengths
    assert scored.total == 40
    assert scored.both_right == pytest.approx(float(both_right(lengths, pairs.labels).double().mean()))
    assert scored.at_least_one_right >= scored.both_right
    assert "both digits right" in scored.summary()
    with pytest.raises(ValueError, match="no pairs"):
        evaluate_multimnist(model, pairs, limit=0, progress=False)
