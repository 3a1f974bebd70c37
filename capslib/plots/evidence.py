"""Pictures of the paper's evidence measured here (notebook 09): the Table 1 ablation, the affine
robustness curves of the shipped CapsNet and CNN, and one transformed digit seen by both models.

Every function draws from results it is given (the committed files that
:mod:`capslib.ablation` and :mod:`capslib.robustness` write) or from one image; none trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data.affine import AffineParameters, affine_transform
from ..experiments.table1 import PAPER_TEST_ERROR, VARIANTS
from ..functional import class_scores
from ..utils import eval_mode

__all__ = ["plot_ablation", "plot_robustness_curves", "plot_transformed_digit", "transformed_view", "CURVE_LABELS"]

CURVE_LABELS = {
    "rotation": "rotation (degrees)",
    "shear": "shear factor",
    "scale": "scale (both axes)",
    "translate_x": "horizontal shift (pixels)",
    "translate_y": "vertical shift (pixels)",
}
MODEL_STYLE = {"capsnet_mnist": ("CapsNet", "tab:blue", "o"), "cnn_baseline_mnist": ("CNN", "tab:orange", "s")}


def _paper_mean(text: str) -> float:
    """``"0.34 +- 0.032"`` -> 0.34."""
    return float(text.split("+-")[0])


def plot_ablation(results: Sequence[dict], axes=None, budget: str = ""):
    """Test error and affine accuracy per Table 1 variant: every run as a dot, the mean as a bar with
    +- one sample standard deviation, and the paper's test error beside ours on its own axis.

    Args:
        results: raw per-run results (:func:`capslib.ablation.load_results`): ``variant``, ``seed``,
            ``test_accuracy``, ``affine_accuracy``.
        axes: three matplotlib axes, or None for a new figure.
        budget: the training budget, for the title (e.g. "1 epoch of 10,000 images").

    Returns:
        The three axes: our test error %, the paper's test error %, our affine accuracy %.
    """
    names = [name for name in VARIANTS if any(r["variant"] == name for r in results)]
    if not names:
        raise ValueError(f"no results of a known variant; expected some of {list(VARIANTS)}")
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.2, 1, 1.2]})
    ours, paper, affine = axes
    x = np.arange(len(names))
    for i, name in enumerate(names):
        runs = [r for r in results if r["variant"] == name]
        colour = "tab:orange" if name.startswith("cnn") else "tab:blue"
        for ax, values in (
            (ours, [100 * (1 - r["test_accuracy"]) for r in runs]),
            (affine, [100 * r["affine_accuracy"] for r in runs if r.get("affine_accuracy") is not None]),
        ):
            if not values:
                continue
            mean = float(np.mean(values))
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            ax.bar(i, mean, color=colour, alpha=0.35, width=0.6)
            ax.errorbar(i, mean, yerr=std, color="black", capsize=4, lw=1)
            ax.plot(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, "k.", ms=5)
    # Bars start at zero on every axis: differences are read against the whole height, not a zoom.
    for ax, title, label in (
        (ours, f"Test error here{': ' + budget if budget else ''}", "test error % (10,000 images)"),
        (paper, "Test error in the paper (Table 1)", "test error %"),
        (affine, "Affine test set accuracy here", "accuracy % (10,000 images)"),
    ):
        if ax is not paper:
            ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(label)
    # The paper's panel shows all of Table 1, its 35.4M-parameter CNN included, whatever we trained.
    for i, (name, text) in enumerate(PAPER_TEST_ERROR.items()):
        colour = "tab:orange" if name.startswith("cnn") else "tab:blue"
        paper.bar(i, _paper_mean(text), color=colour, alpha=0.35, width=0.6)
        paper.text(i, _paper_mean(text), text, ha="center", va="bottom", fontsize=8)
    paper.set_xticks(range(len(PAPER_TEST_ERROR)), list(PAPER_TEST_ERROR), rotation=30, ha="right")
    affine.set_ylim(0, 100)
    ours.figure.tight_layout()
    return axes


def plot_robustness_curves(result: dict, axes=None, parts: Sequence[str] | None = None):
    """Accuracy of each model against each transformation, one panel per transformation.

    Args:
        result: a :func:`capslib.robustness.load_robustness` result (``curves``: part -> amounts;
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
        ax.set_ylabel("test accuracy % (10,000 images)")
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

    Fixed scales at every slider position: the images on [0, 1], the capsule lengths and the
    probabilities on [0, 1], so a bar that moves a little looks like it moved a little.

    Returns:
        The four axes (input, lengths, reconstruction, CNN probabilities).
    """
    view = transformed_view(capsnet, cnn, image, rotation, shear, scale)
    if axes is None:
        _, axes = plt.subplots(1, 4, figsize=(14, 3.2), gridspec_kw={"width_ratios": [1, 1.6, 1, 1.6]})
    picture, lengths, reconstruction, probabilities = axes
    picture.imshow(view["image"].numpy(), cmap="gray", vmin=0, vmax=1)
    picture.set_title(f"label {label}: rot {rotation:+.0f}, shear {shear:+.2f}, scale {scale:.2f}", fontsize=9)
    reconstruction.imshow(view["reconstruction"].numpy(), cmap="gray", vmin=0, vmax=1)
    reconstruction.set_title(f"CapsNet redraws capsule {view['capsnet_prediction']}", fontsize=9)
    for ax in (picture, reconstruction):
        ax.axis("off")
    for ax, values, name, guess in (
        (lengths, view["lengths"], "CapsNet capsule lengths", view["capsnet_prediction"]),
        (probabilities, view["probabilities"], "CNN softmax", view["cnn_prediction"]),
    ):
        colours = ["tab:green" if k == label else ("tab:red" if k == guess else "tab:gray") for k in range(10)]
        ax.bar(range(10), values.numpy(), color=colours)
        ax.set_ylim(0, 1)
        ax.set_xticks(range(10))
        verdict = "right" if guess == label else "WRONG"
        ax.set_title(f"{name}: predicts {guess} ({verdict})", fontsize=9)
    return axes
