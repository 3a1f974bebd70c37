"""Multi-seed studies at a glance: every run's validation curve, and every run's test result beside
its variant's mean and spread (Table 1 at a full budget, the routing study).

They draw the raw per-run results of :func:`capslib.experiments.ablation.load_results` (the keys
``variant``, ``seed``, ``test_accuracy``, ``affine_accuracy`` and ``val_accuracy_per_epoch``);
none trains. Errors are drawn from 0, so that 0.40% against 0.45% looks as small as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .common import image_count, mean_bar

__all__ = ["plot_validation_curves", "plot_study"]

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
MARKERS = ("o", "s", "^", "D", "v", "P")


def _variants(results: Sequence[dict], variants: Sequence[str] | None) -> list[str]:
    """The variants to draw, in ``variants``' order (default: first seen), checked against ``results``."""
    seen = list(dict.fromkeys(r["variant"] for r in results))
    names = [v for v in (variants or seen) if v in seen]
    if not names:
        raise ValueError(f"no results to draw: expected runs of {list(variants or [])}, got variants {seen}")
    return names


def plot_validation_curves(results: Sequence[dict], variants: Sequence[str] | None = None, ax=None, title: str = ""):
    """Every run's validation error after every epoch, one colour per variant, one marker per seed.

    Drawn together so that a reader sees whether the variants were still moving apart when the
    budget ended, and how far the seeds of one variant spread.

    Args:
        results: raw per-run results with ``val_accuracy_per_epoch`` (fractions, epoch 1 first).
        variants: which variants, in this order (default: every one, as first seen).
        ax: a matplotlib axis, or None for a new figure.
        title: the axis title (default: says what is drawn).

    Returns:
        The axis: x the epoch, y the validation error % (from 0).

    Raises:
        ValueError: if no run of ``variants`` is in ``results``, or a run has no curve.
    """
    names = _variants(results, variants)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    for colour, name in zip(COLOURS * 3, names, strict=False):
        runs = sorted((r for r in results if r["variant"] == name), key=lambda r: r["seed"])
        for i, run in enumerate(runs):
            curve = run.get("val_accuracy_per_epoch")
            if not curve:
                raise ValueError(f"{name} seed {run['seed']} has no val_accuracy_per_epoch: rerun it with this capslib")
            errors = [100 * (1 - a) for a in curve]
            label = name if i == 0 else None
            marker = MARKERS[run["seed"] % len(MARKERS)]
            ax.plot(range(1, len(errors) + 1), errors, color=colour, marker=marker, ms=4, lw=1, alpha=0.8, label=label)
    ax.set_ylim(bottom=0)
    # The legend names the colours (variants) and then the markers (seeds), in grey: not extra lines.
    handles, labels = ax.get_legend_handles_labels()
    seeds = sorted({r["seed"] for r in results if r["variant"] in names})
    for seed in seeds if len(seeds) > 1 else ():
        marker = MARKERS[seed % len(MARKERS)]
        handles.append(Line2D([], [], color="gray", marker=marker, ms=4, lw=0))
        labels.append(f"seed {seed}")
    validated = image_count(r.get("config", {}).get("val_size") for r in results if r["variant"] in names)
    ax.set(xlabel="epoch", ylabel=f"validation error % ({validated})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_title(title or "Every run's validation error (markers: seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=8)
    return ax


def plot_study(results: Sequence[dict], variants: Sequence[str] | None = None, budget: str = "", axes=None):
    """Every run's MNIST test error and affine-set accuracy as dots, each variant's mean as a bar
    with +- one sample standard deviation.

    Args:
        results: raw per-run results (``test_accuracy``; ``affine_accuracy`` may be None).
        variants: which variants, in this order (default: every one, as first seen).
        budget: the training budget, for the titles (e.g. "30 epochs, 3 seeds").
        axes: two matplotlib axes, or None for a new figure.

    Returns:
        The two axes: test error % (from 0), affine test accuracy %.
    """
    names = _variants(results, variants)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 4))
    errors, affine = axes
    for i, (colour, name) in enumerate(zip(COLOURS * 3, names, strict=False)):
        runs = [r for r in results if r["variant"] == name]
        mean_bar(errors, i, [100 * (1 - r["test_accuracy"]) for r in runs], colour, 0.6)
        measured = [100 * r["affine_accuracy"] for r in runs if r.get("affine_accuracy") is not None]
        if measured:
            mean_bar(affine, i, measured, colour, 0.6)
    suffix = f" ({budget})" if budget else ""
    tested = image_count(r.get("test_images") for r in results if r["variant"] in names)
    for ax, label, title in (
        (errors, f"MNIST test error % ({tested})", "Test error, every run a dot"),
        (affine, f"affine test accuracy % ({tested})", "Affine test set, every run a dot"),
    ):
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set(ylabel=label)
        ax.set_title(title + suffix, fontsize=10)
    errors.set_ylim(bottom=0)
    affine.set_ylim(0, 100)
    errors.figure.tight_layout()
    return axes
