"""How well a model did: training curves, the confusion matrix, the misclassified images, and
Table 1's ablation beside the paper's numbers.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`), drawing from results
they are given (a training history, an evaluation, the committed ablation runs); none trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import LogNorm
from matplotlib.patches import Patch

from ..experiments.table1 import PAPER_TEST_ERROR, VARIANTS
from ..utils import to_numpy as _np
from .common import image_count, mean_bar, panel_grid

__all__ = ["plot_training_curves", "plot_confusion_matrix", "plot_mistakes", "plot_ablation"]


def plot_training_curves(history: Sequence[dict], axes=None, title: str = "Training curves"):
    """Loss and accuracy per epoch, from the training loop (``capslib.training.loop.fit(...)["history"]``).

    Args:
        history: one dict per epoch with ``epoch``, ``train_loss``, ``train_margin_loss``,
            ``train_accuracy``, ``val_accuracy``.
        axes: two matplotlib axes (loss, accuracy); None makes a new figure.

    Returns:
        The figure.
    """
    if not history:
        raise ValueError("history is empty: train for at least one epoch")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_ax, acc_ax = axes
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="total")
    loss_ax.plot(epochs, [h["train_margin_loss"] for h in history], "s--", label="margin")
    loss_ax.set(xlabel="epoch", ylabel="training loss (mean over the epoch)", title="Loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train (augmented)")
    acc_ax.plot(epochs, [100 * h["val_accuracy"] for h in history], "s-", label="validation")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    acc_ax.legend()
    for ax in axes:
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    fig = loss_ax.figure
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion: torch.Tensor, ax=None, title: str = "Confusion matrix (test set)"):
    """Draw ``confusion`` ``(N_out, N_out)`` with the non-zero counts written in; returns the axes.

    Rows are true classes, columns predicted ones (:attr:`capslib.evaluation.Evaluation.confusion`).
    The diagonal dominates, so colours use a log scale to make the few errors visible.
    """
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"expected a square confusion matrix (N_out, N_out), got {tuple(confusion.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5.5))
    counts = confusion.cpu().numpy()
    image = ax.imshow(counts + 1, cmap="Blues", norm=LogNorm())
    ax.figure.colorbar(image, ax=ax, label="count + 1 (log scale)")
    n = counts.shape[0]
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                colour = "white" if i == j else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return ax


def plot_mistakes(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    lengths: torch.Tensor | None = None,
    max_images: int = 24,
    ncols: int = 8,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
):
    """The misclassified images among ``images``, each titled ``true -> predicted``.

    Args:
        images: ``(N, C, H, W)`` in [0, 1]; labels, predictions: ``(N,)``.
        lengths: optional ``(N, N_out)`` capsule lengths, to print the winning length.
        max_images: draw at most this many mistakes (the first ones).

    Returns:
        The figure (a single message panel if there are no mistakes).
    """
    if not (len(images) == len(labels) == len(predictions)):
        raise ValueError(
            f"images, labels and predictions must have the same length, got {len(images)}, {len(labels)}, "
            f"{len(predictions)}"
        )
    wrong = (labels != predictions).nonzero().flatten()  # (E,)
    total = len(wrong)
    wrong = wrong[:max_images]
    name = (lambda k: class_names[k]) if class_names else str
    title = title or f"{total} mistakes in {len(labels)} images (true -> predicted)"
    if total == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.set_title(title)
        return fig
    fig, axes = panel_grid(len(wrong), ncols, width=1.5, height=1.75, extra_height=0.4)
    for ax, i in zip(axes, wrong.tolist(), strict=False):  # more axes than mistakes
        ax.axis("off")
        ax.imshow(_np(images[i, 0]), cmap="gray_r", vmin=0, vmax=1)
        text = f"{name(int(labels[i]))} -> {name(int(predictions[i]))}"
        if lengths is not None:
            text += f"\n|v| {float(lengths[i].max()):.2f}"
        ax.set_title(text, fontsize=8)
    fig.suptitle(title + (f"; first {len(wrong)} shown" if total > len(wrong) else ""))
    fig.tight_layout()
    return fig


def _paper_mean(text: str) -> float:
    """``"0.34 +- 0.032"`` -> 0.34."""
    return float(text.split("+-")[0])


def plot_ablation(results: Sequence[dict], axes=None, budget: str = ""):
    """Table 1 beside our runs: the test error of every variant, ours and the paper's, as bars on ONE
    axis (so that 6% and 0.3% look as different as they are), and our affine accuracy.

    Ours: every run as a dot, the mean as a bar with +- one sample standard deviation. The paper's:
    its mean, hatched, with its "mean +- std" written above. A variant only one side ran (our
    ``cnn-small``, the paper's 35.4M-parameter ``cnn-baseline``) has one bar.

    Args:
        results: raw per-run results (:func:`capslib.experiments.ablation.load_results`): ``variant``, ``seed``,
            ``test_accuracy``, ``affine_accuracy``.
        axes: two matplotlib axes (test error, affine accuracy), or None for a new figure.
        budget: our training budget, for the legend and titles (e.g. "1 epoch of 10,000 images").

    Returns:
        The two axes: test error % (ours and the paper's), our affine accuracy %.
    """
    names = [name for name in VARIANTS if any(r["variant"] == name for r in results)]
    if not names:
        raise ValueError(f"no results of a known variant; expected some of {list(VARIANTS)}")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.7, 1]})
    errors, affine = axes
    ours_label = f"ours: {budget}" if budget else "ours"
    paper_label = "Sabour et al. 2017, Table 1 (full training)"
    slots = [name for name in VARIANTS if name in names or name in PAPER_TEST_ERROR]
    for i, name in enumerate(slots):
        colour = "tab:orange" if name.startswith("cnn") else "tab:blue"
        runs = [r for r in results if r["variant"] == name]
        if runs:
            mean_bar(errors, i - 0.2, [100 * (1 - r["test_accuracy"]) for r in runs], colour, 0.38)
        if name in PAPER_TEST_ERROR:
            text = PAPER_TEST_ERROR[name]
            errors.bar(i + 0.2, _paper_mean(text), color=colour, alpha=0.8, width=0.38, hatch="//", ec="black")
            errors.text(i + 0.2, _paper_mean(text), text, ha="center", va="bottom", fontsize=7, rotation=90)
    for i, name in enumerate(names):
        colour = "tab:orange" if name.startswith("cnn") else "tab:blue"
        runs = [r for r in results if r["variant"] == name and r.get("affine_accuracy") is not None]
        values = [100 * r["affine_accuracy"] for r in runs]
        if values:
            mean_bar(affine, i, values, colour, 0.6)
    # One y axis for both: the paper's errors are a twentieth of ours, and they should look it.
    errors.set_xticks(range(len(slots)), slots, rotation=30, ha="right")
    errors.set_ylim(bottom=0)
    tested = image_count(r.get("test_images") for r in results)
    errors.set(ylabel=f"MNIST test error % ({tested})")
    errors.set_title(f"Test error, ours ({budget or 'our budget'}) and the paper's, on one axis", fontsize=10)
    errors.legend(
        handles=[Patch(fc="0.8", label=ours_label), Patch(fc="0.8", hatch="//", ec="black", label=paper_label)],
        fontsize=8,
        loc="upper left",
    )
    affine.set_xticks(range(len(names)), names, rotation=30, ha="right")
    affine.set_ylim(0, 100)
    affine.set(ylabel=f"accuracy % ({tested})")
    affine.set_title(f"Affine test set accuracy here{': ' + budget if budget else ''}", fontsize=10)
    errors.figure.tight_layout()
    return axes
