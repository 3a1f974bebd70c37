"""Coupling coefficients of a CapsNet on an image: per iteration on the image, per capsule type, and
how far from uniform they spread.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`); the tensor work is in
:mod:`capslib.analysis.interpret` (:func:`plot_coupling` takes the model and gets its tensors there).

Every figure colours ``c`` on ONE fixed, linear, diverging scale (:func:`coupling_colours`): white at
the uniform share ``1 / N_out``, the same colour for the same value in every iteration and at every
slider position, the range written on the colour bar. A change of 0.002 in ``c`` therefore looks
like a change of 0.002 of the range; a zoomed view is a second call with a narrower ``c_range`` and
says so in its title.

Shapes use the package vocabulary; ``T`` is the number of primary-capsule types and ``H', W'``
their grid (32 and 6x6 for MNIST).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.patches import Rectangle

from ..analysis.interpret import coupling_maps, coupling_spread, mean_coupling, receptive_fields
from ..utils import check_index
from ..utils import to_numpy as _np
from .common import colourbar_extend

__all__ = [
    "FULL_RANGE",
    "coupling_colours",
    "plot_coupling",
    "plot_coupling_types",
    "plot_coupling_spread",
    "plot_receptive_fields",
]


FULL_RANGE = (0.0, 1.0)
"""The default colour range of the coupling figures: every value ``c`` can take."""


def coupling_colours(num_out: int, c_range: tuple[float, float] = FULL_RANGE):
    """The fixed colour scale of the coupling figures: linear in ``c``, white at ``1 / num_out``.

    The colours come from the diverging ``RdBu_r`` map, centred on the uniform share ``1 / N_out``
    and linear on both sides with the SAME slope (``c_range`` need not be symmetric: with the
    default ``(0, 1)``, ``c = 0`` is only a pale blue, ``c = 1`` the darkest red), so equal
    steps of ``c`` look like equal steps of colour everywhere. Nothing depends on the data.

    Args:
        num_out: ``N_out``.
        c_range: ``(low, high)`` the values of ``c`` at the ends of the colour bar, with
            ``low < 1 / N_out < high``; values outside are drawn in the end colours (clipped).

    Returns:
        ``(cmap, norm, label)``: a colormap, a ``Normalize(low, high)`` and a text saying the range,
        for ``imshow(..., cmap=cmap, norm=norm)`` and the colour bar.
    """
    low, high = (float(x) for x in c_range)
    centre = 1.0 / num_out
    if not low < centre < high:
        raise ValueError(f"c_range must satisfy low < 1/N_out = {centre:.3g} < high, got {c_range!r}")
    half = max(centre - low, high - centre)  # the longer side spans half of RdBu_r
    ends = (0.5 - (centre - low) / (2 * half), 0.5 + (high - centre) / (2 * half))  # fractions of RdBu_r
    cmap = ListedColormap(plt.get_cmap("RdBu_r")(np.linspace(*ends, 256)), name="coupling")
    label = f"c from {low:.3g} to {high:.3g}, white = 1/{num_out} = {centre:.3g} (the same scale for every iteration)"
    return cmap, Normalize(low, high), label


def _iterations_to_draw(iterations: int, max_maps: int) -> list[int]:
    """0-based iterations drawn as maps: all of them if they fit in ``max_maps``, else evenly spaced
    ones including the first and the last."""
    if iterations <= max_maps:
        return list(range(iterations))
    return sorted({round(k * (iterations - 1) / (max_maps - 1)) for k in range(max_maps)})


def _not_the_paper(agreement_scale: float) -> str:
    if agreement_scale == 1:
        return ""
    return f"agreement x{agreement_scale:g}: an exploration, NOT the paper's routing algorithm"


def plot_coupling(
    model: torch.nn.Module,
    image: torch.Tensor,
    class_index: int | None = None,
    iterations: int = 3,
    weighted: bool = True,
    title: str | None = None,
    c_range: tuple[float, float] = FULL_RANGE,
    agreement_scale: float = 1.0,
    max_maps: int = 4,
):
    """Which primary capsules send their output to digit capsule ``class_index``, per iteration.

    Panel 0 is the image. The next panels draw, for an iteration each, the coupling coefficients
    ``c_ij`` to the chosen class ``j`` on the image: one square per primary-grid position, placed
    at the centre of that position's receptive field (the dashed box: the 17x17 field of the one
    furthest from uniform), its colour the mean ``c`` over the ``T`` capsule types (weighted by vote
    length if ``weighted``, see :func:`capslib.analysis.interpret.mean_coupling`), on the fixed scale of
    :func:`coupling_colours` (white: the equal share ``1 / N_out``; red: more; blue: less). The last
    panel plots every class's ``|v_j|`` after each iteration.

    Args:
        model: a :class:`capslib.CapsNet`, routed by :func:`capslib.analysis.interpret.coupling_maps`.
        image: ``(C, H, W)``; class_index: ``j`` (None: the class predicted after routing).
        iterations: ``R``; with more than ``max_maps`` iterations only ``max_maps`` evenly spaced
            ones (the first and the last among them) are drawn as maps, each titled with its number.
        c_range: the values of ``c`` at the ends of the colour bar (default: all of ``[0, 1]``);
            a narrower range is a zoom, and the title says so.
        agreement_scale: 1 is the paper's routing; anything else is the exploration of
            ``agreement_scale`` of :func:`capslib.dynamic_routing`, labelled as such in the title.

    Returns:
        The figure.
    """
    maps = coupling_maps(model, image, iterations, agreement_scale)
    lengths = maps["lengths"]  # (R, N_out)
    num_out = lengths.shape[1]
    if class_index is None:
        class_index = int(lengths[-1].argmax())
    class_index = check_index("class_index", class_index, num_out)
    cmap, norm, scale = coupling_colours(num_out, c_range)
    deviation = mean_coupling(maps, class_index, weighted)  # (R, H', W'): mean c - 1/N_out
    grids = deviation + 1.0 / num_out  # (R, H', W'): mean c
    boxes = receptive_fields(grids.shape[1:])  # (H', W', 4)
    grid_h, grid_w = grids.shape[1:]
    centre_top, centre_left = boxes[0, 0, :2].float() + (boxes[0, 0, 2:] - boxes[0, 0, :2]).float() / 2
    step = float(boxes[min(1, grid_h - 1), 0, 0] - boxes[0, 0, 0]) or 1.0
    extent = (
        float(centre_left) - step / 2,
        float(centre_left) + step * (grid_w - 0.5),
        float(centre_top) + step * (grid_h - 0.5),
        float(centre_top) - step / 2,
    )

    drawn = _iterations_to_draw(iterations, max_maps)
    ncols = len(drawn) + 2
    fig, axes = plt.subplots(1, ncols, figsize=(2.2 * ncols + 1.4, 3.5), squeeze=False, layout="constrained")
    axes = axes[0]
    picture = image.reshape(-1, *image.shape[-2:])[0].cpu()  # (H, W): the first channel
    axes[0].imshow(_np(picture), cmap="gray_r", vmin=0, vmax=1)
    axes[0].set(title="input", xlabel="x (pixels)", ylabel="y (pixels)")
    for ax, r in zip(axes[1:-1], drawn, strict=True):
        ax.imshow(_np(picture), cmap="gray_r", vmin=0, vmax=1, alpha=0.45)
        shown = ax.imshow(_np(grids[r]), cmap=cmap, norm=norm, extent=extent, alpha=0.9)
        if float(deviation[r].abs().max()) > 1e-4:  # iteration 1 is uniform: no strongest position to box
            row, col = divmod(int(deviation[r].abs().argmax()), grid_w)
            top, left, bottom, right = boxes[row, col].tolist()
            box = Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False, ls="--", lw=1)
            ax.add_patch(box)
        ax.set(xlim=(-0.5, picture.shape[1] - 0.5), ylim=(picture.shape[0] - 0.5, -0.5))
        ax.set(title=f"iteration {r + 1}\n|v_{class_index}| = {lengths[r, class_index]:.2f}", xlabel="x (pixels)")
        ax.set_yticks([])
    what = "vote-weighted mean c" if weighted else "mean c"
    extend = colourbar_extend(grids, norm.vmin, norm.vmax)
    fig.colorbar(shown, ax=axes[1:-1].tolist(), label=f"{what} to class {class_index}", shrink=0.85, extend=extend)
    ax = axes[-1]
    steps = torch.arange(1, iterations + 1)
    for j in range(num_out):
        bold = j == class_index
        ax.plot(steps, lengths[:, j], "o-" if bold else "-", lw=2.5 if bold else 0.8, color=None if bold else "grey")
    ax.set(title=f"|v_j| (class {class_index} bold)", xlabel="iteration", ylabel="capsule length", ylim=(0, 1))
    ax.set_xticks(steps if iterations <= 5 else [1, *[int(k) for k in steps if k % 2 == 0]])
    heading = title or f"Coupling to digit capsule {class_index} per routing iteration ({what} over the types)"
    lines = [heading, _zoom_note(c_range) or f"colours: {scale}", _not_the_paper(agreement_scale)]
    fig.suptitle("\n".join(line for line in lines if line))
    return fig


def _zoom_note(c_range: tuple[float, float]) -> str:
    if tuple(float(x) for x in c_range) == FULL_RANGE:
        return ""
    low, high = (float(x) for x in c_range)
    return f"ZOOMED colours: only c from {low:.3g} to {high:.3g} (white = 1/N_out), values beyond drawn as the ends"


def plot_coupling_types(
    maps: dict[str, torch.Tensor],
    class_index: int,
    iteration: int = -1,
    ncols: int = 8,
    c_range: tuple[float, float] = FULL_RANGE,
    title: str | None = None,
):
    """Every primary capsule's coupling to one class: the ``T`` type grids ``H' x W'`` side by side.

    Args:
        maps: the output of :func:`capslib.analysis.interpret.coupling_maps` (``coupling`` ``(R, N_out, T, H', W')``).
        class_index: ``j``; iteration: which iteration (0-based, -1: the last).
        c_range: the values of ``c`` at the ends of the colour bar (default: all of ``[0, 1]``), on
            the fixed scale of :func:`coupling_colours`; a narrower range is a zoom, and the title says so.

    Returns:
        The figure (white: the equal share ``1 / N_out``).
    """
    num_iterations, num_out = maps["coupling"].shape[:2]
    class_index = check_index("class_index", class_index, num_out)
    if not -num_iterations <= iteration < num_iterations:
        raise ValueError(f"iteration must lie in [-{num_iterations}, {num_iterations}), got {iteration}")
    cmap, norm, scale = coupling_colours(num_out, c_range)
    c = maps["coupling"][iteration, class_index]  # (T, H', W')
    num_types = c.shape[0]
    nrows = math.ceil(num_types / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.3 * ncols + 1.4, 1.4 * nrows + 0.9), layout="constrained", squeeze=False
    )
    for t, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= num_types:
            ax.axis("off")
            continue
        shown = ax.imshow(_np(c[t]), cmap=cmap, norm=norm)
        ax.set_title(f"type {t}", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("grid row", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("grid column", fontsize=8)
    label = f"coupling c to class {class_index}"
    extend = colourbar_extend(c, norm.vmin, norm.vmax)
    fig.colorbar(shown, ax=axes.ravel().tolist(), label=label, shrink=0.8, extend=extend)
    iteration_number = iteration + 1 if iteration >= 0 else num_iterations + iteration + 1
    heading = title or (
        f"Coupling of each of the {c.numel()} primary capsules to class {class_index}, iteration {iteration_number}"
    )
    fig.suptitle(f"{heading}\n{_zoom_note(c_range) or 'colours: ' + scale}")
    return fig


def plot_coupling_spread(maps: dict[str, torch.Tensor], bins: int = 45, axes=None, title: str | None = None):
    """How far from uniform every input capsule's coupling is, one histogram per iteration.

    Left: ``max_j c_ij`` of each of the ``N_in`` input capsules, on its whole range
    ``[1 / N_out, 1]``; right: the entropy of ``c_i`` in nats on ``[0, ln N_out]``
    (:func:`capslib.analysis.interpret.coupling_spread`). The dashed lines mark uniform coupling
    (``1 / N_out`` and ``ln N_out``). Counts are on a log scale so that a handful of committed
    capsules shows beside a thousand uniform ones; the bins are fixed, not fitted to the data.

    Args:
        maps: the output of :func:`capslib.analysis.interpret.coupling_maps`.
        bins: bins over each full range.
        axes: two matplotlib axes; None makes a new figure.

    Returns:
        The figure.
    """
    spread = coupling_spread(maps)
    num_iterations, num_in = spread["max_coupling"].shape
    num_out = maps["coupling"].shape[1]
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    ranges = {"max_coupling": (1.0 / num_out, 1.0), "entropy": (0.0, math.log(num_out))}
    names = {
        "max_coupling": ("max_j c_ij (each input capsule's largest coupling)", f"uniform: 1/{num_out}"),
        "entropy": ("entropy of c_i (nats)", f"uniform: ln {num_out} = {math.log(num_out):.3f}"),
    }
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, num_iterations))
    for ax, key in zip(axes, ("max_coupling", "entropy"), strict=True):
        low, high = ranges[key]
        edges = np.linspace(low, high, bins + 1)
        for r in range(num_iterations):
            values = np.clip(_np(spread[key][r]), low, high)  # float rounding can step just outside
            ax.hist(values, bins=edges, histtype="step", lw=1.8, color=colours[r], label=f"iteration {r + 1}")
        uniform = high if key == "entropy" else low
        ax.axvline(uniform, color="black", ls="--", lw=1, label=names[key][1])
        ax.set_yscale("log")
        ax.set(
            xlabel=names[key][0],
            ylabel=f"input capsules (of {num_in}, log scale)",
            xlim=(low - 0.02 * (high - low), high + 0.02 * (high - low)),
        )
        ax.set_ylim(0.7, num_in * 1.5)
        ax.legend(fontsize=8, loc="upper center")
    axes[0].set_title("largest coupling per capsule")
    axes[1].set_title("entropy of the coupling per capsule")
    fig = axes[0].figure
    fig.suptitle(
        title or f"Coupling of the {num_in} input capsules, per routing iteration (fixed bins over the full range)"
    )
    return fig


def plot_receptive_fields(
    image: torch.Tensor,
    positions: list[tuple[int, int]],
    grid_size: tuple[int, int] = (6, 6),
    labels: list[str] | None = None,
    ax=None,
    title: str | None = None,
):
    """The pixels that primary-capsule grid positions see, drawn on the image.

    Each position ``(row, col)`` of ``positions`` gets its receptive field
    (:func:`capslib.analysis.interpret.receptive_fields`: 17x17 pixels for MNIST) as a tinted,
    outlined square with a dot at its centre; the centres of all ``H' x W'`` grid positions are
    small black dots. The axes extend one pixel beyond the image on every side, so a field that
    touches the image border still shows all four edges (drawn flush with the axes, a field at
    ``(0, 0)`` would show only two lines, which read as crosshairs).

    Args:
        image: ``(C, H, W)`` or ``(H, W)``; the first channel is drawn, dark on light as everywhere
            in the series.
        positions: grid positions ``(row, col)``, each in ``[0, H') x [0, W')``.
        grid_size: ``(H', W')``, the primary-capsule grid (6x6 for 28x28 MNIST).
        labels: one legend entry per position (default ``"grid (row, col)"``).
        ax: the axes to draw on (default: a new figure).

    Returns:
        The figure.
    """
    if image.dim() not in (2, 3):
        raise ValueError(f"image must be (C, H, W) or (H, W), got shape {tuple(image.shape)}")
    if not positions:
        raise ValueError("positions must name at least one grid position (row, col), got none")
    labels = labels or [f"grid ({row}, {col})" for row, col in positions]
    if len(labels) != len(positions):
        raise ValueError(f"expected one label per position ({len(positions)}), got {len(labels)}")
    picture = image.reshape(-1, *image.shape[-2:])[0].detach().cpu()  # (H, W)
    boxes = receptive_fields(grid_size)  # (H', W', 4): top, left, bottom, right
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.4, 4.4))
    ax.imshow(_np(picture), cmap="gray_r", vmin=0, vmax=1)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, ((row, col), label) in enumerate(zip(positions, labels, strict=True)):
        row, col = check_index("row", row, grid_size[0]), check_index("col", col, grid_size[1])
        top, left, bottom, right = boxes[row, col].tolist()
        colour = colours[k % len(colours)]
        width, height = right - left + 1, bottom - top + 1
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fc=colour, alpha=0.15, ec="none"))
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, lw=2, ec=colour))
        ax.plot((left + right) / 2, (top + bottom) / 2, "o", color=colour, label=label)
    centres = boxes[..., :2].float() + (boxes[0, 0, 2:] - boxes[0, 0, :2]).float() / 2  # (H', W', 2)
    ax.plot(_np(centres[..., 1].flatten()), _np(centres[..., 0].flatten()), "k.", ms=3, label="grid centres")
    height, width = picture.shape
    ax.set(xlim=(-1.5, width + 0.5), ylim=(height + 0.5, -1.5), xlabel="x (pixels)", ylabel="y (pixels)")
    ax.set_title(title or "Receptive fields of primary-capsule grid positions")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig
