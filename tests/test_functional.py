"""squash (Eq. 1), margin loss (Eq. 4) and reconstruction loss (Section 4.1), against hand values."""

from __future__ import annotations

import pytest
import torch
from reference import squash_formula

from capslib import margin_loss, reconstruction_loss, squash


def random_vectors(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- squash ---------------------------------------------------------------------------------------


def test_squash_hand_value():
    # |(3, 4)| = 5: length 25 / 26, direction (0.6, 0.8).
    v = squash(torch.tensor([[3.0, 4.0]], dtype=torch.float64), dim=-1)
    torch.testing.assert_close(v, torch.tensor([[0.6, 0.8]], dtype=torch.float64) * 25.0 / 26.0)
    # |(0.5)| = 0.5: length 0.25 / 1.25 = 0.2 (short vectors shrink towards 0, not to 1).
    torch.testing.assert_close(
        squash(torch.tensor([[-0.5]], dtype=torch.float64), dim=-1), torch.tensor([[-0.2]], dtype=torch.float64)
    )


def test_squash_norms_below_one_and_direction_kept():
    s = random_vectors(4, 6, 8) * torch.logspace(-2, 1.5, 6, dtype=torch.float64).view(1, 6, 1)
    v = squash(s, dim=-1)
    assert v.shape == s.shape
    norms = v.norm(dim=-1)
    assert (norms < 1).all() and (norms > 0).all()
    cosine = torch.nn.functional.cosine_similarity(v, s, dim=-1)
    torch.testing.assert_close(cosine, torch.ones_like(cosine))
    # Length is |s|^2 / (1 + |s|^2): monotone in |s|.
    s_norm = s.norm(dim=-1)
    torch.testing.assert_close(norms, s_norm**2 / (1 + s_norm**2))


def test_squash_matches_paper_formula():
    s = random_vectors(3, 5, 4, seed=1) * 2.0
    torch.testing.assert_close(squash(s, dim=-1), squash_formula(s))


def test_squash_uses_only_the_given_dim():
    s = random_vectors(2, 5, 4, seed=2) * 3.0  # (B, N, D)
    along_last = squash(s, dim=-1)
    along_caps = squash(s, dim=1)
    assert not torch.allclose(along_last, along_caps)
    assert (along_last.norm(dim=-1) < 1).all()
    assert (along_caps.norm(dim=1) < 1).all()
    torch.testing.assert_close(along_last, squash_formula(s))
    torch.testing.assert_close(along_caps, squash_formula(s.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(squash(s, dim=2), along_last)


def test_squash_zero_vector_is_zero_with_finite_gradient():
    s = torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True)
    v = squash(s, dim=-1)
    assert torch.isfinite(v).all()
    assert torch.equal(v, torch.zeros_like(v))
    (grad,) = torch.autograd.grad(v.sum(), s)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-5, rtol=0)

    # float32 too, and a batch mixing zero and non-zero capsules.
    s32 = torch.zeros(2, 4)
    s32[1] = torch.tensor([1.0, 2.0, 0.0, -1.0])
    s32.requires_grad_(True)
    v32 = squash(s32, dim=-1)
    (grad32,) = torch.autograd.grad(v32.pow(2).sum() + v32.sum(), s32)
    assert torch.equal(v32[0], torch.zeros(4))
    assert torch.isfinite(grad32).all()


def test_squash_gradcheck_including_near_zero():
    s = random_vectors(3, 4, seed=3)
    s[0] = 0.0  # exactly zero
    s[1] *= 1e-3  # tiny
    s[2] *= 5.0  # long
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: squash(x, dim=-1), (s,))
    s_other = random_vectors(2, 3, 4, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: squash(x, dim=1), (s_other,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_squash_low_precision(dtype):
    # |s|^2 of these overflows float16 (max 65504) if computed in half precision.
    s = torch.tensor([[300.0, -400.0, 0.0], [0.01, 0.02, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    v = squash(s, dim=-1)
    assert v.dtype == dtype
    assert torch.isfinite(v).all()
    expected = squash(s.double(), dim=-1)
    torch.testing.assert_close(v.double(), expected, atol=2e-3, rtol=1e-2)
    # Rounding each component to half precision may push the length a few ulps past 1.
    assert (v.float().norm(dim=-1) <= 1.0 + 4 * torch.finfo(dtype).eps).all()


# --- margin loss ----------------------------------------------------------------------------------

LENGTHS = torch.tensor([[0.95, 0.30, 0.05], [0.20, 0.60, 0.85]], dtype=torch.float64)
LABELS = torch.tensor([0, 2])


def test_margin_loss_hand_values():
    # Example 0, label 0: present  max(0, 0.9 - 0.95)^2 = 0
    #                     absent   0.5 * (0.30 - 0.1)^2 = 0.02;  0.5 * max(0, 0.05 - 0.1)^2 = 0
    #                     total 0.02
    # Example 1, label 2: absent   0.5 * (0.20 - 0.1)^2 = 0.005; 0.5 * (0.60 - 0.1)^2 = 0.125
    #                     present  (0.9 - 0.85)^2 = 0.0025
    #                     total 0.1325
    # Batch mean: (0.02 + 0.1325) / 2 = 0.07625
    loss = margin_loss(LENGTHS, LABELS, m_plus=0.9, m_minus=0.1, lambda_=0.5)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, torch.tensor(0.07625, dtype=torch.float64))
    torch.testing.assert_close(margin_loss(LENGTHS, LABELS), loss)  # the paper's values are the defaults


def test_margin_loss_hand_values_lambda_one():
    # lambda = 1: example 0 -> 0.04, example 1 -> 0.01 + 0.25 + 0.0025 = 0.2625; mean 0.15125.
    loss = margin_loss(LENGTHS, LABELS, lambda_=1.0)
    torch.testing.assert_close(loss, torch.tensor(0.15125, dtype=torch.float64))


def test_margin_loss_per_example_sum_and_batch_mean():
    first = margin_loss(LENGTHS[:1], LABELS[:1])
    second = margin_loss(LENGTHS[1:], LABELS[1:])
    torch.testing.assert_close(first, torch.tensor(0.02, dtype=torch.float64))
    torch.testing.assert_close(second, torch.tensor(0.1325, dtype=torch.float64))
    doubled = margin_loss(torch.cat([LENGTHS, LENGTHS]), torch.cat([LABELS, LABELS]))
    torch.testing.assert_close(doubled, torch.tensor(0.07625, dtype=torch.float64))


def test_margin_loss_zero_when_confident_and_right():
    lengths = torch.tensor([[0.9, 0.1, 0.0, 0.05], [0.02, 0.1, 0.99, 0.1]])
    assert margin_loss(lengths, torch.tensor([0, 2])).item() == 0.0
    assert margin_loss(lengths, torch.tensor([1, 2])).item() > 0.0


def test_margin_loss_gradient_sign():
    lengths = LENGTHS.clone().requires_grad_(True)
    margin_loss(lengths, LABELS).backward()
    # The true class of example 1 (0.85 < 0.9) is pushed up, the wrong ones above 0.1 pushed down.
    assert lengths.grad[1, 2] < 0
    assert lengths.grad[1, 1] > 0 and lengths.grad[0, 1] > 0
    assert lengths.grad[0, 0] == 0 and lengths.grad[0, 2] == 0


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([0, 3]),  # out of range
        torch.tensor([-1, 0]),  # negative
        torch.tensor([0.0, 2.0]),  # float dtype
        torch.tensor([[0], [2], [1]]),  # (B, K) with the wrong B
        torch.tensor([0, 1, 2]),  # wrong length
        torch.tensor([True, False]),  # bool
        [0, 2],  # not a tensor
    ],
    ids=["out-of-range", "negative", "float", "2d", "length", "bool", "list"],
)
def test_margin_loss_bad_labels(labels):
    with pytest.raises(ValueError, match="labels"):
        margin_loss(LENGTHS, labels)


def test_margin_loss_with_two_targets_per_image():
    # MultiMNIST: T_k = 1 for both digits.
    # Example 0, labels (0, 1): present 0 + (0.9 - 0.30)^2 = 0.36; absent 0.5 * max(0, 0.05 - 0.1)^2 = 0
    # Example 1, labels (2, 1): present (0.9 - 0.85)^2 + (0.9 - 0.60)^2 = 0.0925; absent 0.5 * 0.1^2 = 0.005
    # Batch mean: (0.36 + 0.0975) / 2 = 0.22875
    loss = margin_loss(LENGTHS, torch.tensor([[0, 1], [2, 1]]))
    torch.testing.assert_close(loss, torch.tensor(0.22875, dtype=torch.float64))
    torch.testing.assert_close(margin_loss(LENGTHS, LABELS[:, None]), margin_loss(LENGTHS, LABELS))  # K = 1
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        margin_loss(LENGTHS, torch.tensor([[0, 1], [2, 3]]))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8])
def test_margin_loss_takes_every_integer_label_dtype(dtype):
    expected = margin_loss(LENGTHS, LABELS)
    torch.testing.assert_close(margin_loss(LENGTHS, LABELS.to(dtype)), expected)


def test_label_range_is_checked_on_the_cpu_only():
    """On the CPU the range check is free; elsewhere it would read the labels back every step."""
    from capslib.functional import check_label_range, check_labels

    with pytest.raises(ValueError, match=r"\[0, 3\), got values from 0 to 3"):
        check_labels(torch.tensor([0, 3]), 2, 3)
    # A device whose values cannot be read at all: only dtype and shape are checked, nothing is read.
    check_labels(torch.empty(2, dtype=torch.long, device="meta"), 2, 3)
    with pytest.raises(ValueError, match="shape"):
        check_labels(torch.empty(3, dtype=torch.long, device="meta"), 2, 3)
    with pytest.raises(ValueError, match="integer"):
        check_labels(torch.empty(2, device="meta"), 2, 3)
    # The whole-dataset check where data enters names what it checked.
    with pytest.raises(ValueError, match=r"training labels must lie in \[0, 10\), got values from -1 to 9"):
        check_label_range(torch.tensor([-1, 9]), 10, name="training labels")
    check_label_range(torch.tensor([], dtype=torch.long), 10)


def test_margin_loss_bad_lengths_shape():
    with pytest.raises(ValueError, match="lengths"):
        margin_loss(LENGTHS.unsqueeze(-1), LABELS)


# --- reconstruction loss --------------------------------------------------------------------------


def test_reconstruction_loss_hand_values():
    reconstructions = torch.tensor(
        [[[[0.0, 0.5], [1.0, 0.25]]], [[[0.1, 0.2], [0.3, 0.4]]]], dtype=torch.float64
    )  # (2, 1, 2, 2)
    images = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    # Example 0: 0 + 0.25 + 0 + 0.5625 = 0.8125; example 1: 0.01 + 0.04 + 0.09 + 0.16 = 0.30.
    # Batch mean: 0.55625 (a per-pixel mean would give 0.1390625).
    loss = reconstruction_loss(reconstructions, images)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, torch.tensor(0.55625, dtype=torch.float64))
    torch.testing.assert_close(reconstruction_loss(images, images), torch.tensor(0.0, dtype=torch.float64))


def test_reconstruction_loss_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_loss(torch.zeros(2, 1, 28, 28), torch.zeros(2, 784))
    with pytest.raises(ValueError):
        reconstruction_loss(torch.zeros(3, 1, 28, 28), torch.zeros(2, 1, 28, 28))


# --- empty batches --------------------------------------------------------------------------------


def test_losses_of_an_empty_batch_raise():
    """A mean over no examples is undefined: a ValueError, not a NaN that reaches the weights."""
    with pytest.raises(ValueError, match="no examples"):
        margin_loss(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no examples"):
        reconstruction_loss(torch.zeros(0, 1, 28, 28), torch.zeros(0, 1, 28, 28))


# --- image range ----------------------------------------------------------------------------------


def test_image_range_accepts_zero_to_one_with_float_rounding():
    from capslib.functional import check_image_range

    check_image_range(torch.tensor([0.0, 0.5, 1.0]))
    check_image_range(torch.tensor([-1e-7, 1.0 + 1e-7]))  # rounding of x / 255 and friends
    check_image_range(torch.tensor([0.0, 1.0], dtype=torch.float16))
    check_image_range(torch.zeros(0, 1, 28, 28))  # nothing to check


@pytest.mark.parametrize(
    "images, expected",
    [
        (torch.tensor([0.0, 17.0, 255.0]), r"got values from 0 to 255.*divide by 255"),
        (
            (torch.tensor([0.0, 0.5, 1.0]) - 0.1307) / 0.3081,
            r"got values from -0.424 to 2.82.*standard-normalised MNIST.*capslib normalises nothing",
        ),
        (torch.tensor([-1.0, 0.0, 1.0]), r"got values from -1 to 1.*\(x \+ 1\) / 2"),
        (torch.tensor([0.0, 1.5]), r"got values from 0 to 1.5"),
    ],
    ids=["0-255", "standardised-mnist", "minus-one-to-one", "just-above"],
)
def test_image_range_says_what_came_and_how_to_fix_it(images, expected):
    from capslib.functional import check_image_range

    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\], " + expected):
        check_image_range(images)


def test_image_range_counts_non_finite_values():
    from capslib.functional import check_image_range

    images = torch.rand(4, 1, 5, 5)
    images[0, 0, 0, :3] = float("nan")
    images[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"test images must be finite, got 4 non-finite values \(3 NaN, 1 infinite\)"):
        check_image_range(images, name="test images")
    with pytest.raises(ValueError, match=r"floating-point.*x.float\(\) / 255"):
        check_image_range(torch.zeros(2, 3, dtype=torch.uint8))
