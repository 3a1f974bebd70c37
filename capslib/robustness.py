"""Accuracy under one affine transformation at a time: the curves of affine robustness.

``robustness_curve(model, images, labels, "rotation", range(-60, 61, 10))`` transforms every image
by the same amount (:func:`capslib.affine.affine_transform`) for each amount and returns the
accuracy at each, so a CapsNet and a CNN can be compared transformation by transformation, beside
their accuracy on the mixed affNIST-style set (:func:`capslib.data.affine_mnist`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .affine import AffineParameters, affine_transform
from .functional import check_image_range, check_label_range, class_scores
from .utils import eval_mode

__all__ = ["PARTS", "LIMITS", "robustness_curve"]

PARTS = ("rotation", "shear", "scale", "translate_x", "translate_y")
"""What :func:`robustness_curve` can vary: degrees, shear factor, scale (both axes), pixels."""

LIMITS = {
    "rotation": (-180.0, 180.0),
    "shear": (-0.99, 0.99),
    "scale": (0.1, 3.0),
    "translate_x": (-14, 14),
    "translate_y": (-14, 14),
}
"""The amounts each part accepts."""


def robustness_curve(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    part: str,
    amounts: Sequence[float],
    batch_size: int = 500,
    progress: bool = True,
) -> torch.Tensor:
    """The accuracy of ``model`` on ``images`` with every image transformed by each amount of ``part``.

    Args:
        model: a CapsNet (scores: capsule lengths) or a baseline CNN (scores: logits); run in eval mode.
        images: ``(N, C, H, W)`` in [0, 1], e.g. all 10,000 MNIST test digits.
        labels: ``(N,)`` their classes.
        part: one of :data:`PARTS`; ``"scale"`` scales both axes alike.
        amounts: the values of ``part`` (each within :data:`LIMITS`).

    Returns:
        ``(len(amounts),)`` float64 accuracies, in the order of ``amounts``.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    amounts = [float(a) for a in amounts]
    low, high = LIMITS[part]
    if not amounts or not all(low <= a <= high for a in amounts):
        raise ValueError(f"{part} amounts must be a non-empty list within [{low}, {high}], got {amounts}")
    check_image_range(images, name="images")
    check_label_range(labels, getattr(model, "num_classes", 10), name="labels")
    device = next(model.parameters()).device
    accuracies = []
    with eval_mode(model), torch.no_grad():
        for amount in tqdm(amounts, desc=part, disable=not progress, leave=False):
            values = {"scale_x": amount, "scale_y": amount} if part == "scale" else {part: amount}
            correct = 0
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size]  # (b, C, H, W)
                moved = affine_transform(x, AffineParameters.identity(len(x), **values))  # (b, C, H, W)
                scores = class_scores(model(moved.to(device)))  # (b, N_out)
                correct += int((scores.argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
            accuracies.append(correct / len(images))
    return torch.tensor(accuracies, dtype=torch.float64)
