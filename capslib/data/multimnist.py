"""MultiMNIST: two overlapping digits of different classes on a 36x36 canvas (Sabour et al. 2017,
Section 6), generated as the authors' own generator does (``mnist_shift.py`` of
Sarasra/models, ``research/capsules/input_data/mnist/``).

How one pair is made:

1. both digits are padded by 4 pixels to 36x36 and each is shifted by its own random whole number
   of pixels, up to :data:`MAX_SHIFT` = 4 in each direction (the paper's 4; the released code's
   test command uses 6, which we do not, so that our numbers compare with the paper's);
2. the second digit is drawn from the same split and must be of a *different* class;
3. the two are combined by ADDING and clipping to [0, 1] (as the authors' code does with 255),
   not by taking the maximum.

Each example keeps both shifted digits, so the decoder can be asked to redraw each one on its own.

Splits: training pairs are drawn on the fly from the first 55,000 training images
(:func:`pair_batch`, a fresh pair every time), validation pairs from the last 5,000, and the test
set is FIXED (:func:`multimnist_test_set`): seeded, built from the 10,000 test digits, the same on
every machine (a test checks its checksum). The paper paired every test digit with 1,000 others
(10M pairs); the fixed set here pairs each with ``pairs_per_digit`` (default 1, 10,000 pairs).

Shapes: ``B`` pairs, images ``(B, 1, 36, 36)`` in [0, 1], labels ``(B, 2)`` (first, second digit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..functional import correct_predictions
from .shift import shift_images

__all__ = [
    "CANVAS",
    "PAD",
    "MAX_SHIFT",
    "TEST_SEED",
    "Pairs",
    "make_pair",
    "pair_batch",
    "pairs_for",
    "VALIDATION_SEED",
    "multimnist_test_set",
    "both_right",
    "at_least_one_right",
]

PAD = 4  # 28 + 2 x 4 = 36
CANVAS = 28 + 2 * PAD
"""The canvas side in pixels, 36."""
MAX_SHIFT = 4
"""Largest shift of each digit, in pixels, in each direction (the paper's)."""
TEST_SEED = 1710  # arXiv 1710.09829
"""Seed of the fixed test set."""


@dataclass
class Pairs:
    """A batch of MultiMNIST pairs.

    Attributes:
        images: ``(B, 1, 36, 36)`` the two digits added and clipped to [0, 1]: what the model sees.
        first, second: ``(B, 1, 36, 36)`` each shifted digit on its own (the reconstruction targets).
        labels: ``(B, 2)`` int64, the classes of ``first`` and ``second`` (always different).
        shifts: ``(B, 2, 2)`` int64, ``(dy, dx)`` of each digit.
    """

    images: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    labels: torch.Tensor
    shifts: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def _check_digits(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"digits must be MNIST images (N, 1, 28, 28), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"digits must be floating point in [0, 1], got {images.dtype}: convert with x.float() / 255")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be (N,) = ({images.shape[0]},), one per digit, got {tuple(labels.shape)}")


def _place(digits: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 28, 28)`` digits padded to 36x36 and shifted by ``shifts`` ``(B, 2)``."""
    canvas = torch.nn.functional.pad(digits, (PAD,) * 4)  # (B, 1, 36, 36)
    return shift_images(canvas, shifts, MAX_SHIFT)


def _combine(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor, shifts: torch.Tensor) -> Pairs:
    return Pairs((first + second).clamp_(0.0, 1.0), first, second, labels, shifts)


def make_pair(
    first: torch.Tensor,
    first_label: int,
    second: torch.Tensor,
    second_label: int,
    first_shift: tuple[int, int] = (0, 0),
    second_shift: tuple[int, int] = (0, 0),
) -> Pairs:
    """One pair from two chosen digits and shifts (for the notebook's sliders).

    Args:
        first, second: ``(1, 28, 28)`` digits in [0, 1].
        first_label, second_label: their classes, which must differ.
        first_shift, second_shift: ``(dy, dx)`` whole pixels, each in ``[-4, 4]``.

    Returns:
        :class:`Pairs` of length 1.
    """
    if int(first_label) == int(second_label):
        raise ValueError(
            f"a MultiMNIST pair needs digits of two different classes, got {int(first_label)} twice "
            "(the paper pairs each digit with one of another class)"
        )
    digits = torch.stack([first, second])  # (2, 1, 28, 28)
    labels = torch.tensor([int(first_label), int(second_label)])
    _check_digits(digits, labels)
    shifts = torch.tensor([first_shift, second_shift], dtype=torch.long)  # (2, 2)
    if shifts.abs().max() > MAX_SHIFT:
        raise ValueError(f"shifts must lie in [-{MAX_SHIFT}, {MAX_SHIFT}] pixels, got {first_shift} and {second_shift}")
    placed = _place(digits, shifts)  # (2, 1, 36, 36)
    return _combine(placed[:1], placed[1:], labels.view(1, 2), shifts.view(1, 2, 2))


def _partners(labels: torch.Tensor, first: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each index in ``first``, a uniformly drawn index of a digit of ANOTHER class (drawn
    again where the class matched, until none does: 1 in 10 the first time, 1 in 100 the second...)."""
    second = torch.randint(labels.shape[0], first.shape, generator=generator)  # (B,)
    same = labels[first] == labels[second]  # (B,)
    while same.any():
        second[same] = torch.randint(labels.shape[0], (int(same.sum()),), generator=generator)
        same = labels[first] == labels[second]
    return second


def pairs_for(images: torch.Tensor, labels: torch.Tensor, first: torch.Tensor, generator: torch.Generator) -> Pairs:
    """Pairs whose first digits are ``images[first]``, each with a drawn partner of another class
    and drawn shifts (training: every digit of an epoch's order comes first once).

    Args:
        images: ``(N, 1, 28, 28)`` the split's digits in [0, 1]; labels: ``(N,)``.
        first: ``(B,)`` indices of the first digits.
        generator: a CPU ``torch.Generator``.
    """
    first = first.cpu()
    second = _partners(labels, first, generator)  # (B,)
    shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (first.shape[0], 2, 2), generator=generator)  # (B, 2, 2)
    pair_labels = torch.stack([labels[first], labels[second]], dim=1)  # (B, 2)
    return _combine(_place(images[first], shifts[:, 0]), _place(images[second], shifts[:, 1]), pair_labels, shifts)


def pair_batch(images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator) -> Pairs:
    """``batch_size`` fresh random pairs drawn from ``images`` (a split of MNIST), vectorised.

    The first digits are drawn uniformly; each second digit uniformly among those of another
    class; every digit gets its own uniform shift in ``[-4, 4]`` per axis.

    Args:
        images: ``(N, 1, 28, 28)`` the split's digits, in [0, 1] (at least two classes).
        labels: ``(N,)`` their classes.
        batch_size: pairs to make.
        generator: a CPU ``torch.Generator``: the same state gives the same pairs.
    """
    _check_digits(images, labels)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels.unique().numel() < 2:  # no partner could ever be found
        raise ValueError("MultiMNIST pairs need digits of at least two classes, got one class only")
    first = torch.randint(images.shape[0], (batch_size,), generator=generator)  # (B,)
    return pairs_for(images, labels, first, generator)


VALIDATION_SEED = 55_000
"""Seed of the fixed validation pairs (made from the last 5,000 training digits)."""


def multimnist_test_set(
    images: torch.Tensor, labels: torch.Tensor, pairs_per_digit: int = 1, seed: int = TEST_SEED
) -> Pairs:
    """The fixed test set: every test digit, in order, as the first digit of ``pairs_per_digit``
    pairs, each with a seeded random second digit of another class and seeded shifts.

    Args:
        images: ``(10000, 1, 28, 28)`` the MNIST test digits (``capslib.data.mnist(train=False)``).
        labels: ``(10000,)``.
        pairs_per_digit: pairs made with each test digit first (10,000 x this many pairs).
        seed: the generator's seed; the default makes the set everyone tests on.
    """
    _check_digits(images, labels)
    if pairs_per_digit < 1:
        raise ValueError(f"pairs_per_digit must be >= 1, got {pairs_per_digit}")
    first = torch.arange(images.shape[0]).repeat_interleave(pairs_per_digit)  # (P,)
    return pairs_for(images, labels, first, torch.Generator().manual_seed(seed))


def _top_two(lengths: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if lengths.dim() != 2 or lengths.shape[1] < 2 or labels.shape != (lengths.shape[0], 2):
        raise ValueError(
            f"expected lengths (B, N_out >= 2) and labels (B, 2), got {tuple(lengths.shape)} and {tuple(labels.shape)}"
        )
    top = lengths.topk(2, dim=1).indices  # (B, 2): the two longest capsules
    return top, labels.to(top.device)


def both_right(lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's MultiMNIST metric: ``(B,)`` True where the two longest capsules are exactly the
    two labels (in either order); :func:`capslib.functional.correct_predictions` computes it."""
    _, labels = _top_two(lengths, labels)  # the shape checks
    return correct_predictions(lengths, labels)


def at_least_one_right(lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For context only, NOT the paper's metric: ``(B,)`` True where at least one of the two longest
    capsules is one of the two labels."""
    top, labels = _top_two(lengths, labels)
    return (top.unsqueeze(2) == labels.unsqueeze(1)).any(dim=(1, 2))
