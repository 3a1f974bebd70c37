"""Inverse graphics, drawn: a digit capsule's pose decoded as a renderer would draw it, and two
parts (a triangle and a rectangle) whose votes for two wholes (a house, a boat) agree for one only.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`); the pose figures
decode with :func:`capslib.analysis.interpret.decode_pose`. Poses in the house/boat picture are
homogeneous 2-D transforms ``(3, 3)`` (rotation and position), as in
:func:`capslib.plots.plot_part_whole`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon

from ..analysis.interpret import decode_pose
from ..utils import check_index
from ..utils import to_numpy as _np
from .capsules import POSE_COLOUR
from .common import DIVERGING, no_ticks

__all__ = ["plot_pose_sweep", "plot_pose_offset", "plot_part_votes"]


def _offset_poses(pose: torch.Tensor, dimension: int, offsets) -> torch.Tensor:
    """``(V, D_out)``: ``pose`` with ``offsets[v]`` added to component ``dimension``."""
    if pose.dim() != 1:
        raise ValueError(f"pose must have shape (D_out,), got {tuple(pose.shape)}")
    dimension = check_index("dimension", dimension, pose.shape[0])
    offsets = torch.as_tensor(offsets, dtype=pose.dtype).flatten().cpu()  # (V,)
    poses = pose.detach().cpu().expand(len(offsets), -1).clone()  # (V, D_out)
    poses[:, dimension] += offsets
    return poses


def plot_pose_sweep(
    model: torch.nn.Module,
    pose: torch.Tensor,
    class_index: int,
    dimensions: Sequence[int],
    offsets: Sequence[float],
    title: str | None = None,
):
    """The decoder as a renderer: reconstructions of ``pose`` with one dimension moved at a time.

    Args:
        model: a CapsNet with a decoder.
        pose: ``(D_out,)`` digit capsule ``class_index``'s pose.
        class_index: the decoder slot the pose goes into.
        dimensions: the dimensions to move, one row each.
        offsets: ``V`` values added to the moved dimension, one column each.

    Returns:
        The figure: a ``len(dimensions) x V`` grid of reconstructions on the grey scale 0 .. 1.
    """
    if len(dimensions) == 0 or len(offsets) == 0:
        raise ValueError(f"need at least one dimension and one offset, got {list(dimensions)} and {list(offsets)}")
    rows = [decode_pose(model, _offset_poses(pose, d, offsets), class_index) for d in dimensions]  # (V, C, H, W) each
    fig, axes = plt.subplots(
        len(dimensions), len(offsets), figsize=(1.1 * len(offsets) + 0.8, 1.2 * len(dimensions) + 0.9), squeeze=False
    )
    for r, (dimension, recon) in enumerate(zip(dimensions, rows, strict=True)):
        for c, (offset, picture) in enumerate(zip(offsets, recon, strict=True)):
            ax = axes[r, c]
            ax.imshow(_np(picture[0]), cmap="gray_r", vmin=0.0, vmax=1.0)
            no_ticks(ax)
            if r == 0:
                ax.set_title(f"{float(offset):+.2f}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"dim {dimension}", fontsize=9)
    fig.suptitle(title or f"Decoding digit capsule {class_index}: one pose dimension moved (offset above each column)")
    fig.tight_layout()
    return fig


def plot_pose_offset(
    model: torch.nn.Module,
    pose: torch.Tensor,
    class_index: int,
    dimension: int,
    offset: float,
    limit: float = 0.25,
):
    """One pose dimension moved by ``offset``: the reconstruction before and after, their difference,
    and the pose's numbers. Every scale is fixed by ``pose`` and ``limit``, not by ``offset``, so a
    slider over ``offset`` in ``[-limit, limit]`` keeps its axes.

    Args:
        model: a CapsNet with a decoder.
        pose: ``(D_out,)`` digit capsule ``class_index``'s pose.
        dimension: which component to move.
        offset: what is added to it.
        limit: the largest ``|offset|`` the caller will pass (sets the pose panel's y range).

    Returns:
        The figure (four panels); the title gives the mean absolute pixel change.
    """
    if not abs(float(offset)) <= limit + 1e-9:  # a slider step may overshoot by a rounding
        raise ValueError(f"offset must lie in [-{limit}, {limit}], got {offset}")
    poses = _offset_poses(pose, dimension, [0.0, float(offset)])  # (2, D_out)
    before, after = decode_pose(model, poses, class_index)  # (C, H, W) each
    change = float((after - before).abs().mean())
    fig, axes = plt.subplots(1, 4, figsize=(13, 3), gridspec_kw={"width_ratios": [1, 1, 1.2, 2]})
    names = ("the capsule's pose", f"dim {dimension} {offset:+.2f}")
    for ax, picture, name in zip(axes[:2], (before, after), names, strict=True):
        ax.imshow(_np(picture[0]), cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.set(title=name, xlabel="x (pixels)", ylabel="y (pixels)")
    shown = axes[2].imshow(_np(after[0] - before[0]), cmap=DIVERGING, vmin=-1.0, vmax=1.0)
    fig.colorbar(shown, ax=axes[2], fraction=0.046, label="pixel change")
    axes[2].set(title="after - before (red: ink added)", xlabel="x (pixels)", ylabel="y (pixels)")
    values = _np(poses)
    steps = np.arange(values.shape[1])
    axes[3].bar(steps - 0.2, values[0], width=0.4, color="0.6", label="pose")
    axes[3].bar(steps + 0.2, values[1], width=0.4, color=POSE_COLOUR, label="moved pose")
    low, high = float(values[0].min()) - limit, float(values[0].max()) + limit
    axes[3].set(xticks=steps, ylim=(min(low, 0.0), max(high, 0.0)), xlabel="pose dimension", ylabel="value")
    axes[3].axhline(0.0, color="k", lw=0.6)
    axes[3].tick_params(axis="x", labelsize=7)  # 16 labels side by side
    axes[3].set_title("the numbers the decoder draws from", fontsize=9)
    axes[3].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"Digit capsule {class_index}, dimension {dimension} moved by {offset:+.2f}: mean |pixel change| {change:.3f}"
    )
    fig.tight_layout()
    return fig


WHOLE_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple")  # one colour per whole's votes
PART_MARKERS = ("^", "s", "o", "D")  # one marker per part, at the origin of each of its votes


def _spread(poses: list[np.ndarray]) -> float:
    """How much poses ``(3, 3)`` disagree: the mean distance of three points of each pose's frame (its
    origin and the tips of its unit x and y axes) from their mean over the poses; 0 when all agree,
    and a turn shows as well as a move."""
    frame = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])  # (3, 3 points): origin, x tip, y tip
    points = np.stack([(p @ frame)[:2].T for p in poses])  # (poses, 3 points, 2)
    return float(np.linalg.norm(points - points.mean(axis=0), axis=-1).mean())


def plot_part_votes(
    parts: dict,
    votes: dict,
    wholes: dict | None = None,
    title: str = "Parts vote for wholes",
    extent: float = 3.0,
    ax=None,
):
    """Parts drawn in place, and each part's vote for the pose of each whole (an arrow: position and
    orientation), coloured by the whole. The whole whose votes agree is the reading the parts support.

    Args:
        parts: ``{part: (outline (P, 2), pose (3, 3))}``: each part's outline in its own frame and its pose.
        votes: ``{whole: {part: pose (3, 3)}}``: the pose of each whole predicted by each part (the
            part's pose times its fixed part-to-whole transform; ``W_ij u_i`` in a capsule network).
        wholes: ``{whole: [outline (P, 2), ...]}``: each whole's outlines in its own frame, drawn
            dashed at every vote (None: the votes' arrows only).
        title: the panel's title (each whole's disagreement is appended: the mean distance of the
            votes' frames from their mean, 0 when they agree in position and orientation).
        extent: the axes span ``[-extent, extent]`` both ways, whatever the poses.
        ax: axes to draw into (None: a new figure).

    Returns:
        The axes.
    """
    if not votes or len(votes) > len(WHOLE_COLOURS) or len(parts) > len(PART_MARKERS):
        raise ValueError(
            f"expected 1 to {len(WHOLE_COLOURS)} wholes and at most {len(PART_MARKERS)} parts, "
            f"got {len(votes)} and {len(parts)}"
        )
    if wholes is not None and not set(wholes) <= set(votes):
        raise ValueError(f"wholes must name wholes that have votes ({sorted(votes)}), got {sorted(wholes)}")
    for whole, by_part in votes.items():
        if set(by_part) != set(parts):
            raise ValueError(f"the votes for {whole!r} must name the parts {sorted(parts)}, got {sorted(by_part)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    for k, (outline, pose) in enumerate(parts.values()):
        outline, pose = _np(outline), _np(pose)
        placed = outline @ pose[:2, :2].T + pose[:2, 2]  # (P, 2): the outline in the picture's frame
        ax.add_patch(Polygon(placed, closed=True, facecolor="0.8", edgecolor="0.3", lw=1.2, hatch="//" if k else None))
    spreads = []
    for colour, (whole, by_part) in zip(WHOLE_COLOURS, votes.items(), strict=False):
        poses = [_np(by_part[name]) for name in parts]
        spreads.append(f"{whole} {_spread(poses):.2f}")
        for pose in poses if wholes and whole in wholes else []:
            for outline in wholes[whole]:
                placed = _np(outline) @ pose[:2, :2].T + pose[:2, 2]  # (P, 2)
                ax.add_patch(Polygon(placed, closed=True, fill=False, edgecolor=colour, ls="--", lw=1.2, alpha=0.8))
        for marker, pose in zip(PART_MARKERS, poses, strict=False):
            origin, direction = pose[:2, 2], pose[:2, 1] * 0.8  # the whole's "up" axis
            ax.annotate(
                "", xy=origin + direction, xytext=origin,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=2, shrinkA=0, shrinkB=0, mutation_scale=14),
            )  # fmt: skip
            ax.plot(*origin, marker, color=colour, ms=9, mfc="none", mew=2)
    handles = [
        Line2D([], [], color=c, lw=2, label=f"votes for the {w}") for c, w in zip(WHOLE_COLOURS, votes, strict=False)
    ]
    handles += [
        Line2D([], [], color="k", marker=m, ls="none", mfc="none", label=f"from the {p}")
        for m, p in zip(PART_MARKERS, parts, strict=False)
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=7)
    ax.set_title(f"{title}\ndisagreement of each whole's votes: {', '.join(spreads)}", fontsize=9)
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xlabel="x", ylabel="y")
    ax.set_aspect("equal")
    return ax
