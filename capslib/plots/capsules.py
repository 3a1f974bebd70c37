"""Capsules as numbers: which channels form a primary capsule, one value per primary capsule on its
type's grid, and a digit capsule's length and pose.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..utils import check_index
from ..utils import to_numpy as _np
from .common import DIVERGING, SEQUENTIAL, no_ticks, panel_grid

__all__ = ["plot_capsule_anatomy", "plot_capsule_grid", "plot_capsule_output", "plot_length_saturation"]

POSE_COLOUR = "tab:red"  # a winning capsule's pose, here and in the equivariance figures


def plot_capsule_anatomy(primary_out, capsule: int, in_dim: int = 8, title: str | None = None):
    """Show which numbers of the primary convolution's output form capsule ``n``.

    Args:
        primary_out: ``(T * D_in, H', W')`` output of the primary-capsule convolution for ONE
            image (``(256, 6, 6)`` for MNIST), before squashing.
        capsule: ``n`` in ``[0, T * H' * W')``; capsule ``n = t * H'W' + row * W' + col`` is made of
            channels ``t * D_in .. t * D_in + D_in - 1`` at position ``(row, col)``.
        in_dim: ``D_in``.

    Returns:
        The figure: the channels x positions matrix with the capsule outlined, the type-``t``
        grid with its position marked, and the capsule's ``D_in`` components.
    """
    array = _np(primary_out)
    channels, height, width = array.shape
    num_types = channels // in_dim
    if not 0 <= capsule < num_types * height * width:
        raise ValueError(f"capsule must lie in [0, {num_types * height * width}), got {capsule}")
    t, position = divmod(capsule, height * width)
    row, col = divmod(position, width)
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    matrix = array.reshape(channels, height * width)  # (T*D_in, H'*W')
    limit = np.abs(matrix).max() or 1.0
    shown = ax0.imshow(matrix, cmap=DIVERGING, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    fig.colorbar(shown, ax=ax0, fraction=0.05, label="pre-squash value")
    ax0.add_patch(plt.Rectangle((position - 0.5, t * in_dim - 0.5), 1, in_dim, fill=False, ec="k", lw=2))
    ax0.set_xlabel(f"position row * {width} + col")
    ax0.set_ylabel(f"channel t * {in_dim} + d")
    ax0.set_title(f"primary conv output ({channels}, {height}x{width})")
    type_map = np.linalg.norm(array.reshape(num_types, in_dim, height, width)[t], axis=0)  # (H', W')
    shown = ax1.imshow(type_map, cmap=SEQUENTIAL, vmin=0.0)
    fig.colorbar(shown, ax=ax1, fraction=0.046, label="|raw capsule| (before squash)")
    ax1.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax1.set_xlabel("col")
    ax1.set_ylabel("row")
    ax1.set_title(f"type t={t}: one capsule per grid cell")
    vector = matrix[t * in_dim : (t + 1) * in_dim, position]  # (D_in,)
    ax2.bar(range(in_dim), vector, color=np.where(vector >= 0, "tab:red", "tab:blue"))
    ax2.axhline(0.0, color="k", lw=0.8)
    ax2.set_xlabel("component d")
    ax2.set_ylabel("value")
    ax2.set_title(f"capsule n={capsule}: channels {t * in_dim}-{(t + 1) * in_dim - 1} at ({row}, {col})")
    fig.suptitle(title or f"Capsule n = {t}*{height * width} + {row}*{width} + {col} = {capsule}")
    fig.tight_layout()
    return fig


def plot_capsule_grid(values, grid: tuple[int, int] = (6, 6), title: str = "Capsule lengths", label: str = "length"):
    """Draw one value per primary capsule on its type's grid: ``T`` small ``H' x W'`` maps.

    Args:
        values: ``(N_in,)`` with ``N_in = T * H' * W'`` in PrimaryCaps order
            ``n = t * H'W' + row * W' + col`` (e.g. capsule lengths, or agreements).
        grid: ``(H', W')``.
        label: colour-bar label.

    Non-negative values use a sequential map stretched over their range (read the colour bar:
    a trained model's primary capsules are mostly long); signed ones a diverging map centred on 0.
    Returns the figure.
    """
    array = _np(values)
    height, width = grid
    if array.ndim != 1 or array.size % (height * width):
        raise ValueError(f"expected values (N_in,) with N_in a multiple of {height * width}, got shape {array.shape}")
    types = array.reshape(-1, height, width)  # (T, H', W'): capsule n -> [t, row, col]
    if array.min() < 0:
        cmap, vmax = DIVERGING, np.abs(array).max() or 1.0
        vmin = -vmax
    else:
        cmap, vmin, vmax = SEQUENTIAL, float(array.min()), float(array.max())
    fig, axes = panel_grid(len(types), 8, width=1.15, extra_height=0.8)
    shown = None
    for t, (ax, type_map) in enumerate(zip(axes, types, strict=False)):
        shown = ax.imshow(type_map, cmap=cmap, vmin=vmin, vmax=vmax)
        no_ticks(ax)
        ax.set_title(f"type {t}", fontsize=7, pad=2)
    fig.suptitle(f"{title} (one {height}x{width} grid per capsule type; x = col, y = row)", fontsize=10)
    fig.tight_layout()
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.02, label=label)
    return fig


def plot_capsule_output(
    lengths, pose, class_index: int, title: str = "Digit capsules", pose_limit: float | None = None
):
    """The ``N_out`` capsule lengths (activities) and the ``D_out`` numbers of one capsule's pose.

    Args:
        lengths: ``(N_out,)`` capsule lengths ``|v_j|`` in [0, 1).
        pose: ``(D_out,)`` the pose ``v_k`` of capsule ``class_index``.
        class_index: ``k``, its bar drawn in the pose's colour in the lengths panel.
        title: the figure's title.
        pose_limit: y range ``[-pose_limit, pose_limit]`` of the pose panel (None: its own largest value).

    Returns:
        The figure.
    """
    lengths, pose = _np(lengths), _np(pose)
    class_index = check_index("class_index", class_index, len(lengths))
    fig, (ax_len, ax_pose) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1, 1.6]})
    colours = ["0.7"] * len(lengths)
    colours[class_index] = POSE_COLOUR
    ax_len.bar(range(len(lengths)), lengths, color=colours)
    ax_len.set(xticks=range(len(lengths)), ylim=(0, 1), xlabel="digit capsule j (class)", ylabel="length |v_j|")
    ax_len.set_title("activity = length: is the digit there?", fontsize=9)
    limit = pose_limit or float(np.abs(pose).max() * 1.1 + 1e-12)
    ax_pose.bar(range(len(pose)), pose, color=POSE_COLOUR)
    ax_pose.axhline(0, color="k", lw=0.6)
    ax_pose.set(xticks=range(len(pose)), ylim=(-limit, limit), xlabel="pose dimension d", ylabel="v_k[d]")
    ax_pose.set_title(f"pose = the {len(pose)} numbers of capsule {class_index}: how it looks", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_length_saturation(
    norms: dict, bins: int = 40, title: str = "Primary capsules: lengths before and after squash"
):
    """Where groups of capsules sit on the squash curve: their pre-squash lengths ``|s|`` and their
    lengths ``|v| = |s|^2 / (1 + |s|^2)`` after squash (Eq. 1).

    Args:
        norms: ``{group name: (N,) pre-squash lengths |s|}`` (e.g. capsules over little ink, over
            much ink, over a blank image); each group is drawn as a histogram normalised to a share.
        bins: histogram bins per panel.

    Returns:
        The figure: left, ``|s|`` on a log axis with the squash curve over it (its own axis, 0 to 1);
        right, ``|v|`` on its whole range [0, 1], so that a pile-up near 1 is shown as it is.
    """
    if not norms:
        raise ValueError("norms must name at least one group of pre-squash lengths")
    arrays = {name: _np(values).ravel() for name, values in norms.items()}
    if any(a.size == 0 or (a < 0).any() for a in arrays.values()):
        raise ValueError("every group must hold at least one non-negative length |s|")
    positive = np.concatenate([a[a > 0] for a in arrays.values()])
    low, high = float(positive.min()) / 1.5, float(positive.max()) * 1.5
    log_bins = np.geomspace(low, high, bins + 1)
    fig, (ax_s, ax_v) = plt.subplots(1, 2, figsize=(12, 3.8))
    for name, values in arrays.items():
        weights = np.full(values.size, 1.0 / values.size)  # each group sums to 1: shares, comparable across sizes
        ax_s.hist(np.clip(values, low, high), bins=log_bins, weights=weights, histtype="step", lw=1.8, label=name)
        lengths = values**2 / (1 + values**2)
        ax_v.hist(lengths, bins=np.linspace(0, 1, bins + 1), weights=weights, histtype="step", lw=1.8, label=name)
    ax_s.set_xscale("log")
    ax_s.set(xlabel="pre-squash length |s| (log scale)", ylabel="share of the group's capsules")
    ax_s.set_title("before squash", fontsize=9)
    curve = ax_s.twinx()
    grid = np.geomspace(low, high, 200)
    curve.plot(grid, grid**2 / (1 + grid**2), color="k", ls="--", lw=1, label="squash: |v| as a function of |s|")
    curve.set(ylim=(0, 1.02), ylabel="|v| after squash (dashed curve)")
    ax_v.set(xlim=(0, 1), xlabel="length |v| after squash", ylabel="share of the group's capsules")
    ax_v.set_title("after squash: the whole range [0, 1]", fontsize=9)
    ax_s.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.9))  # under the curve, above the bars
    curve.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
