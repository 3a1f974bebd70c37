"""Why capsules: what max-pooling keeps and loses, parts predicting a whole, and the equivariance
measurement of :mod:`capslib.analysis.equivariance` (how pooled features and a capsule's pose change
as a digit shifts or turns).

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Polygon

from ..analysis.equivariance import centre_of_mass  # the reconstructions' motion, as the curves measure it
from ..utils import check_index
from ..utils import to_numpy as _np
from .capsules import POSE_COLOUR
from .common import SEQUENTIAL

__all__ = [
    "plot_pooling_example",
    "plot_part_whole",
    "plot_equivariance_curves",
    "plot_reconstruction_tracking",
    "plot_equivariance_step",
]

POOLED_COLOUR = "tab:blue"  # the pooled CNN feature, in every equivariance figure
PRIMARY_COLOUR = "tab:cyan"  # the pooled primary-convolution output
LENGTH_COLOUR = "tab:orange"  # the winning capsule's length
PIXEL_COLOUR = "0.55"  # the pixels themselves


UNITS = {"shift": ("shift to the right (px)", "px"), "rotate": ("rotation, counter-clockwise (degrees)", "deg")}


def _annotated_map(ax, values: np.ndarray, vmax: float, title: str) -> None:
    """One small map with its numbers written in, on the colour scale ``[0, vmax]``."""
    ax.imshow(values, cmap=SEQUENTIAL, vmin=0.0, vmax=vmax)
    for (row, col), value in np.ndenumerate(values):
        ax.text(col, row, f"{value:g}", ha="center", va="center", fontsize=8, color="w" if value < vmax / 2 else "k")
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_xlabel("column", fontsize=8)
    ax.set_ylabel("row", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)


def plot_pooling_example(maps, pooled, titles=None, pooled_names=None):
    """Feature maps (top row) and their max-pooled versions (a row per pooling), numbers written in.

    Args:
        maps: ``(K, h, w)`` feature maps, e.g. one pattern at K positions.
        pooled: ``(K, h', w')`` their max-pooled outputs, or a list of such tensors (one row each,
            e.g. a 2x2 pooling and a global one).
        titles: K strings for the columns (default ``map k``).
        pooled_names: one name per pooled row (default ``max-pooled h'xw'``).

    Returns:
        The figure. One colour scale, ``[0, max(maps)]``, for every panel.
    """
    maps = _np(maps)
    pooled = [_np(p) for p in (pooled if isinstance(pooled, list | tuple) else [pooled])]
    if maps.ndim != 3 or any(p.ndim != 3 or len(p) != len(maps) for p in pooled):
        raise ValueError(
            f"expected maps (K, h, w) and pooled (K, h', w'), got {maps.shape} and {[p.shape for p in pooled]}"
        )
    titles = titles or [f"map {k}" for k in range(len(maps))]
    if len(titles) != len(maps):
        raise ValueError(f"expected one title per map ({len(maps)}), got {len(titles)}")
    pooled_names = pooled_names or [f"max-pooled {p.shape[1]}x{p.shape[2]}" for p in pooled]
    vmax = float(max(maps.max(), *(p.max() for p in pooled), 1e-12))
    ratios = [maps.shape[1]] + [max(p.shape[1], 1.5) for p in pooled]
    fig, axes = plt.subplots(
        1 + len(pooled),
        len(maps),
        figsize=(2.6 * len(maps), 1.0 + 0.55 * sum(ratios)),
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
    )
    for k in range(len(maps)):
        _annotated_map(axes[0, k], maps[k], vmax, f"{titles[k]}\nfeature map {maps.shape[1]}x{maps.shape[2]}")
        for row, (p, name) in enumerate(zip(pooled, pooled_names, strict=True), start=1):
            _annotated_map(axes[row, k], p[k], vmax, name)
    fig.suptitle("Max-pooling keeps how strongly a feature is present, not exactly where", fontsize=10)
    fig.tight_layout()
    return fig


def _frame(ax, pose: np.ndarray, colour, label: str | None, width: float = 2.0, size: float = 0.9) -> None:
    """Draw a pose ``(3, 3)`` (homogeneous 2-D: rotation and position) as an arrow along its x axis."""
    origin, direction = pose[:2, 2], pose[:2, 0] * size
    ax.annotate(
        "",
        xy=origin + direction,
        xytext=origin,
        arrowprops=dict(arrowstyle="-|>", color=colour, lw=width, shrinkA=0, shrinkB=0, mutation_scale=8 + 3 * width),
    )
    ax.plot(*origin, "o", color=colour, ms=2 + 2 * width, label=label)


def plot_part_whole(parts: dict, predictions: dict, title: str = "Parts predict the whole", ax=None):
    """Parts drawn in place, and the pose of the whole that each one predicts (an arrow each).

    Args:
        parts: ``{name: (outline (P, 2), pose (3, 3))}``: each part's outline in its own frame and
            its pose (homogeneous 2-D transform: rotation and translation).
        predictions: ``{name: pose (3, 3)}``: the whole's pose predicted by each part (the part's
            pose times its fixed part-to-whole transform, ``W_ij u_i`` in a capsule network).
        title: the panel's title (the spread of the predictions is appended).
        ax: axes to draw into (None: a new figure).

    Returns:
        The axes. Predictions that agree draw one arrow on top of another (each narrower than the
        one below, so that every colour shows).
    """
    if set(parts) != set(predictions):
        raise ValueError(
            f"parts and predictions must name the same parts, got {sorted(parts)} and {sorted(predictions)}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    colours = plt.get_cmap("tab10")
    centres = []
    for k, name in enumerate(parts):
        outline, pose = (_np(a) for a in parts[name])
        placed = outline @ pose[:2, :2].T + pose[:2, 2]  # (P, 2): the outline in the picture's frame
        ax.add_patch(Polygon(placed, closed=True, facecolor=colours(k), alpha=0.35, edgecolor=colours(k), lw=1.5))
        predicted = _np(predictions[name])
        width = 1.5 + 2.0 * (len(parts) - 1 - k)  # the first part's arrow widest: agreeing arrows stay visible
        _frame(ax, predicted, colours(k), f"{name} predicts the whole", width=width)
        centres.append(predicted[:2, 2])
    centres = np.stack(centres)  # (parts, 2)
    spread = float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).mean())
    ax.set_title(f"{title}\nspread of predicted positions: {spread:.2f}", fontsize=9)
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="lower left", fontsize=7)
    return ax


def _band(ax, amounts, values, colour, label, style="-") -> None:
    """Mean over digits as a line, the 25-75 percentile band shaded. ``values`` ``(A, B)``."""
    values = _np(values)
    ax.plot(amounts, values.mean(axis=1), style, color=colour, label=label, lw=1.8, marker="o", ms=3)
    low, high = np.percentile(values, [25, 75], axis=1)
    ax.fill_between(amounts, low, high, color=colour, alpha=0.15, lw=0)


def plot_equivariance_curves(results, ylim: float | None = None):
    """Relative change against the amount of shift or rotation, one panel per result.

    Args:
        results: outputs of :func:`capslib.analysis.equivariance.measure_equivariance` (one per kind).
        ylim: top of every panel's y axis (None: the largest mean drawn, plus 10%).

    Returns:
        The figure: for each kind, the mean over the digits (line) and the middle half of the
        digits (band) of the relative change of the pixels, the pooled Conv1 feature, the pooled
        primary-convolution output, the winning capsule's pose and its length.
    """
    series = [
        ("change_image", PIXEL_COLOUR, "pixels of the digit", ":"),
        ("change_pooled", POOLED_COLOUR, "pooled CNN feature (Conv1, max over space)", "-"),
        ("change_pooled_primary", PRIMARY_COLOUR, "pooled primary conv (max over 6x6)", "--"),
        ("change_pose", POSE_COLOUR, "winning capsule's pose v_k", "-"),
        ("change_length", LENGTH_COLOUR, "its length |v_k| (activity)", "-."),
    ]
    if ylim is None:
        ylim = 1.1 * max(float(_np(r[key]).mean(axis=1).max()) for r in results for key, *_ in series)
    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 4.4), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        amounts = _np(result["amounts"])
        for key, colour, label, style in series:
            _band(ax, amounts, result[key], colour, label, style)
        xlabel, _ = UNITS[result["kind"]]
        digits = result["original"].shape[0]
        ax.set(xlabel=xlabel, ylabel="relative change ||f(x') - f(x)|| / ||f(x)||", ylim=(0, ylim))
        ax.set_title(f"{result['kind']}: mean over {digits} test digits (band: middle half)", fontsize=9)
        ax.axvline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_reconstruction_tracking(results):
    """How far the reconstruction from the winning capsule moved, against how far the digit moved.

    Args:
        results: outputs of :func:`capslib.analysis.equivariance.measure_equivariance`.

    Returns:
        The figure: per kind, the median over the digits (line) and the middle half (band) of the
        reconstruction's motion (centre of mass for a shift, principal axis for a rotation)
        against the amount applied; the dashed diagonal is a reconstruction that follows exactly.
    """
    fig, axes = plt.subplots(1, len(results), figsize=(5.0 * len(results), 4.0), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        amounts = _np(result["amounts"])
        xlabel, unit = UNITS[result["kind"]]
        for key, colour, label in (
            ("input_motion", PIXEL_COLOUR, "the digit itself"),
            ("reconstruction_motion", POSE_COLOUR, "reconstruction from v_k"),
        ):
            values = _np(result[key])
            low, median, high = np.percentile(values, [25, 50, 75], axis=1)
            ax.plot(amounts, median, color=colour, marker="o", ms=3, label=label)
            ax.fill_between(amounts, low, high, color=colour, alpha=0.15, lw=0)
        ax.plot(amounts, amounts, "k--", lw=0.8, label="follows exactly")
        what = "centre of mass moved (px)" if result["kind"] == "shift" else "principal axis turned (deg)"
        ax.set(xlabel=xlabel, ylabel=what)
        ax.set_title(f"{result['kind']}: median over the digits (band: middle half)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def _amount_index(result, amount) -> int:
    amounts = _np(result["amounts"])
    matches = np.nonzero(np.isclose(amounts, float(amount)))[0]
    if len(matches) == 0:
        raise ValueError(f"amount must be one of the measured {amounts.tolist()}, got {amount}")
    return int(matches[0])


def plot_equivariance_step(result, amount: float, index: int = 0):
    """One digit at one amount: the digit, the reconstructions, both feature vectors vs the original.

    Top row: the untransformed digit, the transformed one, the reconstruction from the winning
    capsule of each (a cross marks each reconstruction's centre of mass, the dotted line where the
    untransformed one's was; the last title says how far it moved or turned). Bottom row: the 256
    pooled Conv1 features and the 16 pose numbers, untransformed (grey) and transformed (colour);
    this digit's relative changes at every measured amount, with the current one marked. Every
    axis range is fixed by the whole result, so it does not move with the slider.

    Args:
        result: an output of :func:`capslib.analysis.equivariance.measure_equivariance`.
        amount: one of ``result["amounts"]`` (pixels or degrees).
        index: which digit of the result, in ``[0, B)``.

    Returns:
        The figure.
    """
    step = _amount_index(result, amount)
    index = check_index("index", index, result["original"].shape[0])
    kind = result["kind"]
    xlabel, unit = UNITS[kind]
    amounts = _np(result["amounts"])
    winner = int(result["classes"][index])
    predicted = int(result["predictions"][step, index])

    fig = plt.figure(figsize=(13, 6.4))
    grid = fig.add_gridspec(2, 12, height_ratios=[1, 1.05], hspace=0.45, wspace=2.0)
    motion = float(result["reconstruction_motion"][step, index])  # centre of mass (shift) or axis (rotation)
    moved = "moved" if kind == "shift" else "turned"
    images = [
        (result["original"][index], "digit x (untransformed)"),
        (result["images"][step, index], f"x' ({kind} {amount:g} {unit})\npredicted: {predicted}"),
        (result["reconstruction_reference"][index], f"decoded from v_{winner}(x)"),
        (result["reconstructions"][step, index], f"decoded from v_{winner}(x')\n{moved} {motion:+.1f} {unit}"),
    ]
    reference_x = float(centre_of_mass(result["reconstruction_reference"][index])[0, 0])
    for k, (image, title) in enumerate(images):
        ax = fig.add_subplot(grid[0, 3 * k : 3 * k + 3])
        ax.imshow(_np(image)[0], cmap="gray_r", vmin=0.0, vmax=1.0)
        if k >= 2:  # reconstructions: where their mass is
            centre = _np(centre_of_mass(image))[0]
            ax.plot(*centre, "+", color=POSE_COLOUR, ms=12, mew=2)
            ax.axvline(reference_x, color=POSE_COLOUR, lw=0.8, ls=":")
        ax.set_xticks(range(0, 28, 9))
        ax.set_yticks(range(0, 28, 9))
        ax.set_xlabel("column x (px)", fontsize=8)
        ax.set_ylabel("row y (px)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=9)

    pooled_ref, pooled_now = _np(result["pooled_reference"][index]), _np(result["pooled"][step, index])
    pooled_top = 1.05 * float(max(_np(result["pooled"]).max(), _np(result["pooled_reference"]).max()))
    order = np.argsort(-pooled_ref)  # channels sorted by their untransformed value: a change shows as jitter
    ax = fig.add_subplot(grid[1, 0:4])
    ax.plot(pooled_ref[order], color="0.6", lw=2.5, label="x")
    ax.plot(pooled_now[order], color=POOLED_COLOUR, lw=1.0, label="x'")
    change = float(result["change_pooled"][step, index])
    ax.set(xlabel="Conv1 channel (sorted by its value for x)", ylabel="max over space", ylim=(0, pooled_top))
    ax.set_title(f"pooled CNN feature (256)\nrelative change {change:.3f}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")

    pose_ref, pose_now = _np(result["pose_reference"][index]), _np(result["poses"][step, index])
    pose_top = 1.1 * float(max(np.abs(_np(result["poses"])).max(), np.abs(_np(result["pose_reference"])).max()))
    dims = np.arange(len(pose_ref))
    ax = fig.add_subplot(grid[1, 4:8])
    ax.bar(dims - 0.2, pose_ref, width=0.4, color="0.6", label="x")
    ax.bar(dims + 0.2, pose_now, width=0.4, color=POSE_COLOUR, label="x'")
    ax.axhline(0, color="k", lw=0.5)
    change = float(result["change_pose"][step, index])
    length = float(result["lengths"][step, index])
    ax.set(xlabel="pose dimension d", ylabel=f"v_{winner}[d]", ylim=(-pose_top, pose_top), xticks=dims[::3])
    ax.set_title(f"pose v_{winner} (16): relative change {change:.3f}\nlength {length:.2f}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")

    curves_top = 1.1 * float(max(_np(result["change_pooled"]).max(), _np(result["change_pose"]).max()))
    ax = fig.add_subplot(grid[1, 8:12])
    ax.plot(amounts, _np(result["change_pooled"][:, index]), color=POOLED_COLOUR, marker="o", ms=3, label="pooled")
    ax.plot(amounts, _np(result["change_pose"][:, index]), color=POSE_COLOUR, marker="o", ms=3, label="pose")
    ax.axvline(float(amount), color="k", lw=0.8, ls="--")
    ax.set(xlabel=xlabel, ylabel="relative change", ylim=(0, curves_top))
    ax.set_title("this digit, every amount", fontsize=9)
    ax.legend(fontsize=8, loc="upper center")
    fig.suptitle(
        f"Digit {index} of the measured set (winning capsule: {winner}), {kind} {amount:g} {unit}", fontsize=10
    )
    return fig
