"""MultiMNIST pictures: a made pair, the paper's Figure 5, routing on overlapping digits, and the
routing-iteration study.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`). The tensor work
(routing a pair, reconstructing from the two longest capsules) is in :mod:`capslib.analysis.separation`.

One colour per digit throughout: the first digit of a pair (A) is red, the second (B) green, as in
the paper's Figure 5, but drawn as ink on white paper like every digit of the series (red ink and
green ink together make black where both are drawn).

Shapes use the package vocabulary; ``H' x W'`` is the primary-capsule grid (10x10 for 36x36 pairs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.patches import Rectangle

from ..utils import to_numpy as _np
from .common import colourbar_extend, image2d, no_ticks

__all__ = [
    "DIGIT_COLOURS",
    "COUPLING_LIMIT",
    "overlay",
    "difference_colours",
    "fitted_limit",
    "plot_made_pair",
    "plot_reconstruction_pair",
    "plot_figure5",
    "plot_coupling_difference",
    "plot_pair_coupling",
    "plot_iteration_study",
]

DIGIT_COLOURS = ("tab:red", "tab:green")
"""Digit A (the first of a pair) and digit B, in every figure here."""
COUPLING_LIMIT = 1.0
"""The default half-range of the coupling-difference colour scale: every value ``c_A - c_B`` can take."""
FULL_SEPARATION = 1.0  # the separation of a pair whose capsules each route all their output to their own digit
FIELD_CENTRE, STRIDE = 8, 2  # primary capsule (row, col) sees pixels 2 row .. 2 row + 16: centre 2 row + 8


def _pair_labels(labels, name: str = "labels") -> tuple[int, int]:
    values = [int(x) for x in _np(labels).reshape(-1)]
    if len(values) != 2:
        raise ValueError(f"{name} must hold the two digits' classes (2,), got {len(values)} values")
    return values[0], values[1]


def overlay(image, first, second, grey: float = 0.3) -> np.ndarray:
    """The paper's Figure 5 colours as ink on white paper: ``(H, W, 3)`` RGB in [0, 1]. The input
    is light grey ink (``grey`` x its intensity taken off every channel), ``first`` red ink (taken
    off green and blue), ``second`` green ink (taken off red and blue); where both are drawn the
    inks add to black. Grey strokes are input that neither explains.

    Args:
        image: ``(1, H, W)`` the pair; first, second: ``(1, H, W)`` the two images to overlay
            (reconstructions, or the shifted digits themselves), values in [0, 1].
    """
    base = image2d(image)
    red, green = image2d(first, "first"), image2d(second, "second")
    if not base.shape == red.shape == green.shape:
        raise ValueError(
            f"image, first and second must have the same (H, W), got {base.shape}, {red.shape}, {green.shape}"
        )
    ink = np.repeat(grey * base[..., None], 3, axis=2)  # (H, W, 3): ink taken off white
    ink[..., 1] += red  # red ink absorbs green and blue
    ink[..., 2] += red
    ink[..., 0] += green  # green ink absorbs red and blue
    ink[..., 2] += green
    return 1.0 - np.clip(ink, 0.0, 1.0)


def plot_made_pair(image, first, second, labels, lengths, title: str | None = None):
    """One pair as the generator makes it, and what the model reads from it.

    Args:
        image: ``(1, H, W)`` the pair (the two shifted digits added and clipped to [0, 1]).
        first, second: ``(1, H, W)`` the two shifted digits on their own.
        labels: ``(2,)`` their classes; lengths: ``(N_out,)`` the model's capsule lengths for ``image``.

    Returns:
        The figure: the two digits in their colours; the input as the model sees it (grey); the
        capsule lengths on a fixed 0..1 axis, the two labels coloured, the two longest outlined.
    """
    label_a, label_b = _pair_labels(labels)
    scores = _np(lengths).reshape(-1)
    top = [int(k) for k in np.argsort(-scores, kind="stable")[:2]]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    zero = np.zeros_like(image2d(image))
    axes[0].imshow(overlay(zero, first, second))
    axes[0].set_title(f"A = {label_a} (red), B = {label_b} (green)\nblack: where they overlap", fontsize=9)
    axes[1].imshow(image2d(image), cmap="gray_r", vmin=0, vmax=1)
    axes[1].set_title("the input: A + B, clipped to [0, 1]", fontsize=9)
    for ax in axes[:2]:
        ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
    colours = ["lightgrey"] * len(scores)
    colours[label_a], colours[label_b] = DIGIT_COLOURS
    bars = axes[2].bar(range(len(scores)), scores, color=colours)
    for k in top:
        bars[k].set_edgecolor("black")
        bars[k].set_linewidth(2)
    axes[2].set(ylim=(0, 1), xlabel="digit capsule j", ylabel="length |v_j|", xticks=range(len(scores)))
    right = sorted(top) == sorted((label_a, label_b))
    verdict = "both right" if right else "NOT both right"
    axes[2].set_title(f"two longest (outlined): {top[0]} and {top[1]}: {verdict}", fontsize=9)
    fig.suptitle(title or f"A MultiMNIST pair: labels ({label_a}, {label_b})")
    fig.tight_layout()
    return fig


def plot_reconstruction_pair(image, reconstructions, labels, predicted, ax=None):
    """One pair of Figure 5: the input in grey, the reconstructions from the two predicted capsules
    in red and green; titled ``L:(labels) R:(predicted)`` as in the paper, marked when wrong.

    Args:
        image: ``(1, H, W)``; reconstructions: ``(2, 1, H, W)``, masked by ``predicted[0]`` and
            ``predicted[1]``; labels, predicted: ``(2,)``.

    Returns:
        The axes.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(2.4, 2.6))
    recon = _np(reconstructions)
    if recon.shape[0] != 2:
        raise ValueError(f"reconstructions must be (2, 1, H, W), one per predicted digit, got {recon.shape}")
    label_a, label_b = _pair_labels(labels)
    read_a, read_b = _pair_labels(predicted, "predicted")
    right = sorted((read_a, read_b)) == sorted((label_a, label_b))
    ax.imshow(overlay(image, recon[0], recon[1]))
    no_ticks(ax)
    ax.set_title(f"L:({label_a},{label_b}) R:({read_a},{read_b})" + ("" if right else "\nWRONG"),
                 fontsize=9, color="black" if right else "tab:red")  # fmt: skip
    return ax


def plot_figure5(images, reconstructions, labels, predicted, ncols: int = 6, title: str | None = None):
    """The paper's Figure 5 for several pairs: per pair the input (top) and, below it, the two
    reconstructions from the two longest capsules overlaid on it in red and green ink (black where
    both are drawn).

    Args:
        images: ``(P, 1, H, W)`` pairs; reconstructions: ``(P, 2, 1, H, W)``; labels, predicted: ``(P, 2)``
            (:func:`capslib.analysis.separation.reconstruct_predicted` returns the last three).
        ncols: pairs per row.

    Returns:
        The figure.
    """
    count = len(images)
    if not (count == len(reconstructions) == len(labels) == len(predicted)) or count == 0:
        raise ValueError(
            f"images, reconstructions, labels and predicted must be non-empty and equally long, got "
            f"{len(images)}, {len(reconstructions)}, {len(labels)}, {len(predicted)}"
        )
    ncols = min(ncols, count)
    rows = math.ceil(count / ncols)
    fig, axes = plt.subplots(2 * rows, ncols, figsize=(1.9 * ncols, 4.0 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(count):
        top, bottom = axes[2 * (k // ncols), k % ncols], axes[2 * (k // ncols) + 1, k % ncols]
        top.axis("on")
        bottom.axis("on")
        top.imshow(image2d(images[k]), cmap="gray_r", vmin=0, vmax=1)
        no_ticks(top)
        plot_reconstruction_pair(images[k], reconstructions[k], labels[k], predicted[k], ax=bottom)
        top.set_title(bottom.get_title(), fontsize=9, color=bottom.title.get_color())  # above the pair it names
        bottom.set_title("")
    wrong = sum(sorted(_pair_labels(p)) != sorted(_pair_labels(lab)) for p, lab in zip(predicted, labels, strict=True))
    heading = title or "Figure 5 of Sabour et al.: inputs (top) and reconstructions (red, green) over them"
    fig.suptitle(f"{heading}\nL: labels, R: the two longest capsules, each reconstructed; {wrong} of {count} wrong")
    fig.tight_layout()
    return fig


def difference_colours(limit: float = COUPLING_LIMIT):
    """The fixed colour scale of the coupling difference ``c_A - c_B``: ``(cmap, norm, label)``.

    Green (digit B) through white (an even split) to red (digit A), linear and symmetric: from
    ``-limit`` to ``+limit``, the same for every pair, iteration and slider position, so a change
    of 0.01 always looks like 0.01 of the range. The full range is 1 (complete separation); a
    narrower ``limit`` (one fitted to the values of a whole set of pairs, :func:`fitted_limit`) is a
    zoom, and the label says by how much.
    """
    if isinstance(limit, bool) or not (isinstance(limit, int | float) and 0 < limit <= 1):
        raise ValueError(f"limit must be a number in (0, 1] (c_A - c_B lies in [-1, 1]), got {limit!r}")
    # 257 colours, an odd number: the middle one, white, is exactly c_A - c_B = 0
    cmap = LinearSegmentedColormap.from_list("b_white_a", [DIGIT_COLOURS[1], "white", DIGIT_COLOURS[0]], N=257)
    full = limit == COUPLING_LIMIT
    zoom = "\n(the full range)" if full else f"\n(ZOOMED {COUPLING_LIMIT / limit:.0f}x; full: -1 .. 1)"
    label = f"c_A - c_B, fixed {-limit:g} .. {limit:g}{zoom}"
    return cmap, Normalize(-limit, limit), label


def fitted_limit(values) -> float:
    """The half-range of a colour scale that fits ``values`` (any shape, in [-1, 1]): their largest
    ``|value|`` rounded up to 1, 2 or 5 times a power of ten (0.0145 -> 0.02), at most 1.

    Fit it once to everything a figure or slider can show (every pair and iteration offered), and
    pass it as ``limit``: the scale is then fixed across slider positions and filled by the data.
    """
    parts = values if isinstance(values, list | tuple) else [values]
    array = np.abs(np.concatenate([np.asarray(_np(v), dtype=float).reshape(-1) for v in parts] or [np.zeros(0)]))
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"values must be a non-empty set of finite numbers, got {array.size} values")
    largest = float(array.max())
    if largest == 0.0:
        return COUPLING_LIMIT
    power = 10.0 ** math.floor(math.log10(largest))
    step = next(m for m in (1, 2, 5, 10) if m * power >= largest * (1 - 1e-6))
    return min(COUPLING_LIMIT, float(f"{step * power:.1g}"))


def plot_coupling_difference(
    image, difference, labels, limit: float = COUPLING_LIMIT, ax=None, title: str | None = None
):
    """Where one pair's primary capsules send their output, for one routing iteration, on the image.

    Each of the ``H' x W'`` grid positions is a square at the centre of its receptive field
    (position ``(row, col)`` sees pixels ``2 row .. 2 row + 16``, so the squares are 2 px apart and
    cover the middle of the image), coloured by the length-weighted mean over its capsule types of
    ``c_A - c_B`` (:func:`capslib.analysis.separation.coupling_difference`): red, the capsules there
    route to digit A; green, to digit B; white, an even split.

    Args:
        image: ``(1, H, W)`` the pair, drawn underneath in grey.
        difference: ``(H', W')`` values in [-1, 1].
        labels: ``(2,)`` the classes of A and B.
        limit: the half-range of the FIXED colour scale (:func:`difference_colours`).

    Returns:
        The axes (its last image is the coupling map, for a colour bar).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    picture = image2d(image)
    grid = _np(difference)
    if grid.ndim != 2:
        raise ValueError(f"difference must be one grid (H', W'), got shape {grid.shape}")
    label_a, label_b = _pair_labels(labels)
    cmap, norm, _ = difference_colours(limit)
    rows, cols = grid.shape
    extent = (FIELD_CENTRE - STRIDE / 2, FIELD_CENTRE + STRIDE * (cols - 0.5),
              FIELD_CENTRE + STRIDE * (rows - 0.5), FIELD_CENTRE - STRIDE / 2)  # fmt: skip
    ax.imshow(picture, cmap="gray_r", vmin=0, vmax=1, alpha=0.4)
    ax.imshow(grid, cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
    if picture.min() < 0.5 < picture.max():  # the strokes' outline, over the colours
        ax.contour(picture, levels=[0.5], colors="black", linewidths=0.7)
    left, right, bottom, top = extent
    # the grid covers only the middle of the image (the field centres): outside the dashed frame no
    # capsule is centred, and the image shows through uncoloured
    ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, ls="--", lw=0.8, ec="0.3"))
    ax.set(xlim=(-0.5, picture.shape[1] - 0.5), ylim=(picture.shape[0] - 0.5, -0.5))
    ax.set(xlabel="x (pixels); dashed: field centres", ylabel="y (pixels)")
    ax.set_title(title or f"A = {label_a} (red) vs B = {label_b} (green)", fontsize=9)
    return ax


def plot_pair_coupling(
    image,
    difference,
    labels,
    lengths=None,
    limit: float = COUPLING_LIMIT,
    max_iterations: int | None = None,
    title: str | None = None,
):
    """One pair's routing, one panel per iteration: which primary capsules route to which digit.

    Args:
        image: ``(1, H, W)`` the pair.
        difference: ``(R, H', W')`` ``c_A - c_B`` per iteration
            (:func:`capslib.analysis.separation.pair_coupling` ``["difference"]``).
        labels: ``(2,)`` the classes of A and B.
        lengths: optional ``(R, N_out)`` ``|v_j|`` after each iteration, drawn in a last panel
            (A red, B green, the other classes grey) on fixed axes.
        limit: the half-range of the colour scale: the SAME for every iteration, pair and slider
            position (default: all of [-1, 1]); a narrower one is a zoom, and the title says so.
        max_iterations: the lengths panel's iteration axis runs to this (default ``R``), so that it
            stays put while a slider changes ``R``.

    Returns:
        The figure.
    """
    grids = _np(difference)
    if grids.ndim != 3:
        raise ValueError(f"difference must be (R, H', W'), got shape {grids.shape}")
    num_iterations = grids.shape[0]
    max_iterations = max_iterations or num_iterations
    if max_iterations < num_iterations:
        raise ValueError(f"max_iterations must be >= the {num_iterations} iterations drawn, got {max_iterations}")
    label_a, label_b = _pair_labels(labels)
    extra = 1 if lengths is not None else 0
    ncols = 1 + num_iterations + extra
    fig, axes = plt.subplots(1, ncols, figsize=(2.5 * ncols + 1.2, 3.3), squeeze=False, layout="constrained")
    axes = axes[0]
    axes[0].imshow(image2d(image), cmap="gray_r", vmin=0, vmax=1)
    axes[0].set(title="input", xlabel="x (pixels)", ylabel="y (pixels)")
    for r in range(num_iterations):
        plot_coupling_difference(image, grids[r], labels, limit, ax=axes[1 + r], title=f"iteration {r + 1}")
        if r:
            axes[1 + r].set(ylabel="")
    cmap, norm, label = difference_colours(limit)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[1 : 1 + num_iterations]), shrink=0.85,
                 label=label, extend=colourbar_extend(grids, -limit, limit))  # fmt: skip
    if lengths is not None:
        ax = axes[-1]
        values = _np(lengths)
        if values.shape[0] != num_iterations:
            raise ValueError(f"lengths must be (R, N_out) with R = {num_iterations}, got {values.shape}")
        steps = np.arange(1, num_iterations + 1)
        for j in range(values.shape[1]):
            if j not in (label_a, label_b):
                ax.plot(steps, values[:, j], "-", color="grey", lw=0.8)
        for j, colour in zip((label_a, label_b), DIGIT_COLOURS, strict=True):
            ax.plot(steps, values[:, j], "o-", color=colour, lw=2.2, label=f"{j}")
        ax.set(xlim=(0.5, max_iterations + 0.5), ylim=(0, 1), xlabel="iteration", ylabel="|v_j|")
        ax.set_xticks(range(1, max_iterations + 1))
        ax.set_title("capsule lengths (others grey)", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
    heading = title or f"Routing on a pair: A = {label_a} (red), B = {label_b} (green)"
    # The colour range is FIXED (never the data's min/max): a per-figure range would stretch a
    # 0.001 change to full red, and two slider positions would not compare. Print it, so nobody has to guess.
    zoom = (" (the full range: 1 = complete separation)" if limit == COUPLING_LIMIT
            else f" (ZOOMED {COUPLING_LIMIT / limit:.0f}x: the full range is -1 .. 1)")  # fmt: skip
    fig.suptitle(
        f"{heading}\neach square: a primary-grid position, the |u|-weighted mean over its capsule types of c_A - c_B\n"
        f"fixed colour range {-limit:g} .. {limit:g}{zoom}; values drawn {grids.min():+.4f} .. {grids.max():+.4f}",
        fontsize=10,
    )
    return fig


def plot_iteration_study(study: dict, axes=None, references: Sequence[tuple[str, int, float]] = ()):
    """The iteration study (:func:`capslib.experiments.multimnist_study.load_iteration_study`) as two panels.

    Left: the error per iteration count with +- one binomial standard error,
    ``sqrt(p (1 - p) / n)`` over the ``n`` test pairs. Right: the separation on its FULL scale, 0
    (uniform coupling) to 1 (every capsule routes all its output to its own digit), both marked, so
    that a separation of a few thousandths looks like a few thousandths.

    Args:
        study: the dict with ``results`` rows (``iterations``, ``both_right``, ``at_least_one_right``,
            optionally ``separation``), ``test_pairs`` and ``name``.
        axes: two axes (errors, separation); None makes a figure.
        references: ``(label, iterations, error %)`` points to mark, e.g. a published result.

    Returns:
        The figure.
    """
    rows = sorted(study["results"], key=lambda row: row["iterations"])
    if not rows:
        raise ValueError("the study has no results rows")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10.5, 3.6))
    counts = [row["iterations"] for row in rows]
    both = [100 * (1 - row["both_right"]) for row in rows]
    spread = [100 * math.sqrt(row["both_right"] * (1 - row["both_right"]) / study["test_pairs"]) for row in rows]
    one = [100 * (1 - row["at_least_one_right"]) for row in rows]
    ax = axes[0]
    ax.errorbar(counts, both, yerr=spread, fmt="o-", color="black", capsize=4,
                label="not both right (the paper's error), +- 1 standard error")  # fmt: skip
    ax.plot(counts, one, "s--", color="grey", label="neither right (context)")
    for k, (label, r, error) in enumerate(references):
        ax.plot([r], [error], marker="*^v"[k % 3], ms=11, ls="none", label=label)
    for r, value, sd in zip(counts, both, spread, strict=True):
        ax.annotate(f"{value:.2f}", (r, value + sd), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.set(xlabel="routing iterations", ylabel="test error (%)", ylim=(0, None), xticks=counts)
    ax.set_title(f"{study.get('name', 'model')}: {study['test_pairs']:,} test pairs", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    if all("separation" in row for row in rows):
        separation = [row["separation"] for row in rows]
        ax.plot(counts, separation, "o-", color="tab:purple", label="measured")
        for r, value in zip(counts, separation, strict=True):
            ax.annotate(f"{value:+.4f}", (r, value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.axhline(FULL_SEPARATION, color="tab:purple", ls="--", lw=1, label="complete separation (1)")
        ax.axhline(0.0, color="grey", lw=0.8, label="none: uniform coupling (0)")
        # The whole scale, never a zoom: on it the measured thousandths look like thousandths.
        low = -FULL_SEPARATION if min(separation) < -0.1 * FULL_SEPARATION else -0.1 * FULL_SEPARATION
        ax.set(xlabel="routing iterations", ylabel="own - other coupling", xticks=counts,
               ylim=(low, 1.1 * FULL_SEPARATION))  # fmt: skip
        ax.set_title("separation on its full scale, 0 (none) to 1 (complete)", fontsize=10)
        ax.legend(fontsize=8, loc="center right")
        ax.grid(alpha=0.3)
    else:
        ax.axis("off")
    fig = axes[0].figure
    fig.tight_layout()
    return fig
