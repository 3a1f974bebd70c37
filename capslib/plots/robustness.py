"""Robustness to affine transformations: accuracy curves of the shipped CapsNet and CNN, and one
transformed digit as both models see it.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`), drawing from the
committed results of :mod:`capslib.evaluation.robustness` or from one image; none trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data.affine import AffineParameters, affine_transform
from ..functional import class_scores
from ..utils import eval_mode
from .common import image_count

__all__ = ["CURVE_LABELS", "plot_robustness_curves", "transformed_view", "plot_transformed_digit"]


CURVE_LABELS = {
    "rotation": "rotation (degrees)",
    "shear": "shear factor",
    "scale": "scale (both axes)",
    "translate_x": "horizontal shift (pixels)",
    "translate_y": "vertical shift (pixels)",
}

MODEL_STYLE = {"capsnet_mnist": ("CapsNet", "tab:blue", "o"), "cnn_baseline_mnist": ("CNN", "tab:orange", "s")}


def plot_robustness_curves(result: dict, axes=None, parts: Sequence[str] | None = None):
    """Accuracy of each model against each transformation, one panel per transformation.

    Args:
        result: a :func:`capslib.evaluation.robustness.load_robustness` result (``curves``: part -> amounts;
            ``models``: name -> ``curves``: part -> accuracies, ``clean_accuracy``).
        axes: one axis per part, or None for a new figure.
        parts: which transformations (default: all in ``result``).

    Returns:
        The axes. Every panel's accuracy axis runs from 0 to 100%: a small gap looks small.
    """
    parts = list(parts or result["curves"])
    unknown = [p for p in parts if p not in result["curves"]]
    if unknown:
        raise ValueError(f"no curve for {unknown} in the result; it has {list(result['curves'])}")
    if axes is None:
        _, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 3.8), squeeze=False)
        axes = axes[0]
    for ax, part in zip(axes, parts, strict=True):
        amounts = result["curves"][part]
        for name, measured in result["models"].items():
            label, colour, marker = MODEL_STYLE.get(name, (name, None, "^"))
            accuracy = 100 * np.asarray(measured["curves"][part])
            ax.plot(amounts, accuracy, marker=marker, color=colour, label=label, ms=4)
        ax.set_ylim(0, 100)
        ax.set_xlabel(CURVE_LABELS.get(part, part))
        ax.set_ylabel(f"test accuracy % ({image_count([result.get('test_images')])})")
        ax.grid(alpha=0.3)
        ax.set_title(f"Accuracy vs {CURVE_LABELS.get(part, part).split(' (')[0]}", fontsize=10)
    axes[0].legend(loc="lower center")
    axes[0].figure.tight_layout()
    return axes


def transformed_view(
    capsnet, cnn, image: torch.Tensor, rotation: float = 0.0, shear: float = 0.0, scale: float = 1.0
) -> dict:
    """One digit under one transformation, as both models see it.

    Args:
        capsnet: a CapsNet with a decoder; cnn: a :mod:`capslib.baselines` CNN (logits).
        image: ``(1, 28, 28)`` or ``(1, 1, 28, 28)`` in [0, 1].

    Returns:
        ``image`` ``(28, 28)`` transformed; ``lengths`` ``(10,)`` CapsNet's capsule lengths;
        ``reconstruction`` ``(28, 28)`` from the longest capsule; ``probabilities`` ``(10,)`` the
        CNN's softmax; ``capsnet_prediction`` and ``cnn_prediction`` (ints).
    """
    if tuple(image.shape) not in ((1, 28, 28), (1, 1, 28, 28)):
        raise ValueError(f"image must be (1, 28, 28) or (1, 1, 28, 28), got {tuple(image.shape)}")
    image = image.reshape(1, 1, 28, 28)
    params = AffineParameters.identity(1, rotation=rotation, shear=shear, scale_x=scale, scale_y=scale)
    moved = affine_transform(image.float().cpu(), params)  # (1, 1, 28, 28)
    with eval_mode(capsnet), eval_mode(cnn), torch.no_grad():
        out = capsnet(moved.to(next(capsnet.parameters()).device))  # decoder masked by the prediction
        logits = class_scores(cnn(moved.to(next(cnn.parameters()).device)))  # (1, 10)
    lengths = out.lengths[0].float().cpu()  # (10,)
    return {
        "image": moved[0, 0],
        "lengths": lengths,
        "reconstruction": out.reconstructions[0, 0].float().cpu(),
        "probabilities": torch.softmax(logits[0].float().cpu(), dim=0),
        "capsnet_prediction": int(lengths.argmax(dim=0)),
        "cnn_prediction": int(logits[0].argmax(dim=0)),
    }


def plot_transformed_digit(
    capsnet,
    cnn,
    image: torch.Tensor,
    label: int,
    rotation: float = 0.0,
    shear: float = 0.0,
    scale: float = 1.0,
    axes=None,
):
    """The transformed digit, CapsNet's capsule lengths and reconstruction, and the CNN's softmax.

    Two different quantities, on two differently labelled axes: a capsule length ``|v_j|`` is each
    class's own number in [0, 1) (they need not sum to 1: the title prints their sum), a softmax
    probability is a share of one total (they sum to 1). Fixed scales at every slider position: the
    images on [0, 1] (ink dark on white, as everywhere in the series), both bar axes on [0, 1], so
    a bar that moves a little looks like it moved a little.

    Returns:
        The four axes (input, lengths, reconstruction, CNN probabilities).
    """
    view = transformed_view(capsnet, cnn, image, rotation, shear, scale)
    if axes is None:
        _, axes = plt.subplots(
            1, 4, figsize=(14, 3.4), gridspec_kw={"width_ratios": [1, 1.6, 1, 1.6]}, layout="constrained"
        )
    picture, lengths, reconstruction, probabilities = axes
    picture.imshow(view["image"].numpy(), cmap="gray_r", vmin=0, vmax=1)
    picture.set_title(f"label {label}: rot {rotation:+.0f}, shear {shear:+.2f}, scale {scale:.2f}", fontsize=9)
    reconstruction.imshow(view["reconstruction"].numpy(), cmap="gray_r", vmin=0, vmax=1)
    reconstruction.set_title(f"CapsNet redraws capsule {view['capsnet_prediction']}", fontsize=9)
    for ax in (picture, reconstruction):
        ax.set_xticks([])
        ax.set_yticks([])
    lengths_title = f"CapsNet: capsule lengths, each in [0, 1) (sum {float(view['lengths'].sum()):.2f})"
    for ax, values, name, guess, quantity in (
        (lengths, view["lengths"], lengths_title, view["capsnet_prediction"], "length |v_j|"),
        (probabilities, view["probabilities"], "CNN: softmax (sums to 1)", view["cnn_prediction"],
         "probability (softmax)"),
    ):  # fmt: skip
        colours = ["tab:green" if k == label else ("tab:red" if k == guess else "tab:gray") for k in range(10)]
        ax.bar(range(10), values.numpy(), color=colours)
        ax.set_ylim(0, 1)
        ax.set_xticks(range(10))
        ax.set(xlabel="class", ylabel=quantity)
        verdict = "right" if guess == label else "WRONG"
        ax.set_title(f"{name}\npredicts {guess} ({verdict})", fontsize=9)
    return axes
