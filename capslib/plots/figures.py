"""Pure plotting functions for notebooks 01-04: tensors in, a matplotlib figure or axes out.

The figures of a trained model (notebooks 05-08: training curves, confusion matrix, mistakes,
coupling maps, Figure 4) are in :mod:`capslib.plots_trained`.

Each function draws from its arguments only (no model calls, no globals), so a notebook can call
it once statically and then wrap it in :func:`capslib.widgets.interactive_plot`. Functions that
draw one panel take ``ax=None`` and return the axes; functions that draw several panels make
their own figure and return it. Every panel has a title and labelled axes. Signed values get a
diverging colour map centred on zero (``RdBu_r``), non-negative ones a sequential one.

Tensors may live on any device and carry gradients; they are detached and moved to the CPU here.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, TwoSlopeNorm

from ..utils import check_index
from ..utils import to_numpy as _np

__all__ = [
    "plot_digit",
    "plot_images",
    "plot_filters",
    "plot_feature_maps",
    "plot_capsule_anatomy",
    "plot_squash",
    "plot_capsule_grid",
    "plot_routing_iterations",
    "plot_routing_lab",
    "plot_coupling_polarisation",
    "plot_margin_loss",
    "plot_loss_comparison",
]

DIVERGING = "RdBu_r"  # signed values: weights, agreements (red > 0, blue < 0, white = 0)
SEQUENTIAL = "viridis"  # non-negative values: activations, lengths, coupling coefficients


def _image2d(image) -> np.ndarray:
    """``(1, H, W)`` or ``(H, W)`` -> ``(H, W)`` numpy array."""
    array = _np(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected an image of shape (1, H, W) or (H, W), got {array.shape}")
    return array


def _grid(n: int, ncols: int, panel: float = 1.2, extra_height: float = 0.6):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, panel * nrows + extra_height), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_digit(image, title: str = "MNIST digit", ax=None, pixel_grid: bool = False):
    """Draw one image ``(1, H, W)`` or ``(H, W)`` with values in [0, 1]; returns the axes.

    With ``pixel_grid`` the axes are labelled in pixels (column x, row y) with ticks every 4 px.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    array = _image2d(image)
    shown = ax.imshow(array, cmap="gray_r", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="intensity")
    ax.set_xticks(range(0, array.shape[1], 4) if pixel_grid else [])
    ax.set_yticks(range(0, array.shape[0], 4) if pixel_grid else [])
    ax.set_xlabel("column x (pixels)")
    ax.set_ylabel("row y (pixels)")
    ax.set_title(title)
    return ax


def plot_images(images, captions=None, title: str = "Images", ncols: int = 8, cmap: str = "gray_r"):
    """Draw a batch ``(B, 1, H, W)`` (or ``(B, H, W)``) in [0, 1] as a grid; returns the figure.

    ``captions``: optional list of ``B`` strings written above each image.
    """
    array = _np(images)
    if array.ndim == 4:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"expected images of shape (B, 1, H, W) or (B, H, W), got {array.shape}")
    if captions is not None and len(captions) != len(array):
        raise ValueError(f"expected one caption per image ({len(array)}), got {len(captions)}")
    fig, axes = _grid(len(array), ncols, panel=1.3)
    for k, (ax, image) in enumerate(zip(axes, array, strict=False)):
        ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0)
        _no_ticks(ax)
        if captions is not None:
            ax.set_title(captions[k], fontsize=8)
    fig.suptitle(f"{title}\n(each panel: pixels, x = column, y = row)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_filters(weight, title: str = "Conv1 filters", ncols: int = 16):
    """Draw convolution filters ``(F, 1, k, k)`` in a diverging map, each scaled to its own range.

    White is 0; red pixels raise the filter's response where the image is bright, blue ones lower
    it. Returns the figure.
    """
    array = _np(weight)
    if array.ndim != 4 or array.shape[1] != 1:
        raise ValueError(f"expected filters of shape (F, 1, k, k), got {array.shape}")
    fig, axes = _grid(len(array), ncols, panel=0.75, extra_height=0.9)
    for k, (ax, kernel) in enumerate(zip(axes, array[:, 0], strict=False)):
        limit = np.abs(kernel).max() or 1.0
        ax.imshow(kernel, cmap=DIVERGING, vmin=-limit, vmax=limit)
        _no_ticks(ax)
        ax.set_title(str(k), fontsize=6, pad=1)
    fig.suptitle(f"{title} (filter index above; x, y = kernel column, row; red > 0 > blue)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_feature_maps(maps, indices=None, title: str = "Feature maps", ncols: int = 8):
    """Draw feature maps ``(F, H', W')`` (non-negative, after ReLU) on one shared colour scale.

    ``indices``: optional labels (e.g. the filter numbers) for the ``F`` panels. Returns the figure.
    """
    array = _np(maps)
    if array.ndim != 3:
        raise ValueError(f"expected feature maps of shape (F, H', W'), got {array.shape}")
    labels = list(range(len(array))) if indices is None else [int(i) for i in indices]
    fig, axes = _grid(len(array), ncols, panel=1.25, extra_height=0.9)
    vmax = array.max() or 1.0
    shown = None
    for ax, feature, label in zip(axes, array, labels, strict=False):
        shown = ax.imshow(feature, cmap=SEQUENTIAL, vmin=0.0, vmax=vmax)
        _no_ticks(ax)
        ax.set_title(f"filter {label}", fontsize=7, pad=2)
    fig.suptitle(f"{title} (x, y = output column, row)", fontsize=10)
    fig.tight_layout()
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.02, label="activation (ReLU)")
    return fig


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


def plot_squash(max_length: float = 6.0, ax=None):
    """Eq. 1 as a curve: output length ``|s|^2 / (1 + |s|^2)`` against input length ``|s|``; returns axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    norm = np.linspace(0.0, max_length, 400)
    ax.plot(norm, norm**2 / (1 + norm**2), label="squash: |s|^2 / (1 + |s|^2)")
    ax.plot(norm, np.minimum(norm, 1.0), "--", color="gray", label="identity, capped at 1")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xlabel("input length |s|")
    ax.set_ylabel("output length |v|")
    ax.set_title("Squash keeps the direction and maps lengths into [0, 1)")
    ax.legend(loc="lower right")
    return ax


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
    fig, axes = _grid(len(types), 8, panel=1.15, extra_height=0.8)
    shown = None
    for t, (ax, type_map) in enumerate(zip(axes, types, strict=False)):
        shown = ax.imshow(type_map, cmap=cmap, vmin=vmin, vmax=vmax)
        _no_ticks(ax)
        ax.set_title(f"type {t}", fontsize=7, pad=2)
    fig.suptitle(f"{title} (one {height}x{width} grid per capsule type; x = col, y = row)", fontsize=10)
    fig.tight_layout()
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.02, label=label)
    return fig


def _coupling_norm(num_out: int, limits: tuple[float, float] | None):
    """The fixed colour scale of a mean coupling: ``limits``, or 0 .. 2/N_out, white at 1/N_out."""
    low, high = (0.0, 2.0 / num_out) if limits is None else (float(limits[0]), float(limits[1]))
    if not low < 1.0 / num_out < high:
        raise ValueError(f"coupling_limits must enclose 1/N_out = {1 / num_out:.3g}, got {(low, high)}")
    return TwoSlopeNorm(vcenter=1.0 / num_out, vmin=low, vmax=high), low, high


def plot_routing_iterations(
    trace,
    example: int = 0,
    target: int | None = None,
    title: str = "Dynamic routing",
    max_iterations: int | None = None,
    coupling_limits: tuple[float, float] | None = None,
):
    """How routing changes the outputs and the coupling coefficients, iteration by iteration.

    Every scale is fixed, so that pictures for different iteration counts or images compare:
    lengths on [0, 1]; the mean coupling on ``coupling_limits`` (default ``0 .. 2/N_out``, white at
    the uniform ``1/N_out``: a change of 0.002 stays pale); the histogram on [0, 1] x [1, N_in].

    Args:
        trace: list of ``R`` :class:`capslib.RoutingStep` (``c`` ``(B, N_in, N_out)``, ``v``
            ``(B, N_out, D_out)``), e.g. ``dynamic_routing(u_hat, R, return_trace=True).trace``.
        example: which example of the batch to draw.
        target: the class to follow in the histogram (default: the longest capsule after the
            last iteration).
        max_iterations: the iteration axes run to this (default ``R``); pass a slider's maximum
            so that the axes stay put while it moves.
        coupling_limits: ``(low, high)`` of the mean-coupling colour scale, around ``1/N_out``.

    Returns:
        The figure: output lengths ``|v_j|`` per iteration; mean coupling ``mean_i c_ij`` per
        iteration and class; the distribution over input capsules of ``c_i,target``.
    """
    if not trace:
        raise ValueError("trace is empty: route with return_trace=True and at least one iteration")
    example = check_index("example", example, trace[0].v.shape[0])
    lengths = np.stack([np.linalg.norm(_np(step.v[example]), axis=-1) for step in trace])  # (R, N_out)
    coupling = np.stack([_np(step.c[example]) for step in trace])  # (R, N_in, N_out)
    num_iterations, num_out = lengths.shape
    num_in = coupling.shape[1]
    if max_iterations is None:
        max_iterations = num_iterations
    elif max_iterations < num_iterations:
        raise ValueError(f"max_iterations must be >= the trace's {num_iterations} iterations, got {max_iterations}")
    norm, low, high = _coupling_norm(num_out, coupling_limits)
    target = int(lengths[-1].argmax()) if target is None else check_index("target", target, num_out)
    iterations = np.arange(1, num_iterations + 1)
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    colours = plt.get_cmap("tab10")
    for j in range(num_out):
        ax0.plot(iterations, lengths[:, j], marker="o", ms=3, color=colours(j % 10), lw=3 if j == target else 1,
                 label=str(j))  # fmt: skip
    ax0.set_ylim(0.0, 1.0)
    ax0.set_xlim(0.5, max_iterations + 0.5)
    ax0.set_xticks(range(1, max_iterations + 1))
    ax0.set_xlabel("routing iteration r")
    ax0.set_ylabel("output length |v_j|")
    ax0.set_title(f"Output lengths (class {target} bold)")
    ax0.legend(title="class j", fontsize=7, ncol=2, loc="best")
    mean_c = coupling.mean(axis=1)  # (R, N_out)
    shown = ax1.imshow(mean_c, cmap=DIVERGING, norm=norm, aspect="auto",
                       extent=(-0.5, num_out - 0.5, num_iterations + 0.5, 0.5))  # fmt: skip
    label = f"mean_i c_ij (fixed scale {low:g} .. {high:g})"
    fig.colorbar(shown, ax=ax1, label=label)
    if mean_c.size <= 100:  # small enough to write every value in
        for (r, j), value in np.ndenumerate(mean_c):
            ax1.text(j, r + 1, f"{value:.3f}"[1:] if value < 1 else "1.00", ha="center", va="center", fontsize=6)
    ax1.set_xlim(-0.5, num_out - 0.5)
    ax1.set_ylim(max_iterations + 0.5, 0.5)
    ax1.set_xticks(range(num_out))
    ax1.set_yticks(range(1, max_iterations + 1))
    ax1.set_xlabel("output capsule j (class)")
    ax1.set_ylabel("routing iteration r")
    ax1.set_title(f"Mean coupling to each class\n(white = uniform 1/N_out = {1 / num_out:g})", fontsize=10)
    bins = np.linspace(0.0, 1.0, 41)
    for r in range(num_iterations):
        shade = plt.get_cmap("plasma")(r / max(1, max_iterations - 1) * 0.85)
        ax2.hist(coupling[r, :, target], bins=bins, histtype="step", lw=1.5, color=shade, label=f"r={r + 1}")
    ax2.axvline(1.0 / num_out, color="gray", ls="--", lw=1, label="uniform 1/N_out")
    ax2.set_yscale("log")
    ax2.set_xlim(0.0, 1.0)
    ax2.set_ylim(0.8, num_in * 1.5)
    ax2.set_xlabel(f"c_i,{target} (coupling of input capsule i to class {target})")
    ax2.set_ylabel("number of input capsules i")
    ax2.set_title(f"Coupling coefficients to class {target}")
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{title}: {num_iterations} iteration(s), example {example}")
    fig.tight_layout()
    return fig


def plot_routing_lab(result, iteration: int, membership=None, example: int = 0, title: str = "Routing lab"):
    """Synthetic votes as arrows, one panel per output capsule, at one routing iteration.

    In panel ``j`` every vote ``u_hat_{j|i}`` is an arrow from the origin, coloured and made
    opaque by its coupling ``c_ij`` on a fixed scale 0 .. 1 (faint: little of the vote reaches
    ``j``); the cluster members of ``j`` are circled; the output ``v_j`` of this iteration is the
    thick black arrow, its earlier iterations grey dots; the dashed circle is ``|v| = 1``. The last
    panel follows the coupling over all iterations. Axis limits depend only on ``result`` (not on
    ``iteration``), so a slider over ``iteration`` moves the arrows, never the axes.

    Args:
        result: a :class:`capslib.RoutingResult` (``dynamic_routing(..., return_trace=True)``) of
            votes ``u_hat`` ``(B, N_in, N_out, D)``, ``D >= 2`` (for ``D > 2`` the first two
            components are drawn), e.g. of :func:`capslib.routing_lab.synthetic_votes`.
        iteration: which iteration to draw, 1-based, in ``[1, R]``.
        membership: optional ``(N_in,)`` long, the output whose cluster each input capsule
            belongs to (``-1`` for none), as :func:`capslib.routing_lab.synthetic_votes` returns.
        example: which example of the batch.

    Returns:
        The figure.
    """
    u_hat = _np(result.u_hat)
    if u_hat.ndim != 4 or u_hat.shape[-1] < 2:
        raise ValueError(f"u_hat must have shape (B, N_in, N_out, D) with D >= 2, got {u_hat.shape}")
    num_iterations = len(result.trace)
    integer = isinstance(iteration, (int, np.integer)) and not isinstance(iteration, bool)
    if not integer or not 1 <= iteration <= num_iterations:
        raise ValueError(f"iteration must be an integer in [1, {num_iterations}], got {iteration!r}")
    example = check_index("example", example, u_hat.shape[0])
    votes = u_hat[example, ..., :2]  # (N_in, N_out, 2)
    num_in, num_out = votes.shape[:2]
    members = np.full(num_in, -1) if membership is None else _np(membership).astype(int)
    if members.shape != (num_in,):
        raise ValueError(f"membership must have shape (N_in,) = ({num_in},), got {members.shape}")
    coupling = np.stack([_np(step.c[example]) for step in result.trace])  # (R, N_in, N_out)
    outputs = np.stack([_np(step.v[example, ..., :2]) for step in result.trace])  # (R, N_out, 2)
    step_c, step_v = coupling[iteration - 1], outputs[iteration - 1]  # (N_in, N_out), (N_out, 2)
    limit = 1.15 * max(1.0, float(np.abs(votes).max()))  # fixed for this result
    cmap = ListedColormap(plt.get_cmap("plasma")(np.linspace(0.0, 0.9, 256)))  # no pale yellow end
    components = "components 1, 2" if u_hat.shape[-1] == 2 else f"first 2 of {u_hat.shape[-1]} components"

    fig, axes = plt.subplots(1, num_out + 1, figsize=(3.7 * num_out + 5.0, 4.1), layout="constrained",
                             gridspec_kw={"width_ratios": [1] * num_out + [1.3]})  # fmt: skip
    for j, ax in enumerate(axes[:num_out]):
        rgba = cmap(step_c[:, j])  # (N_in, 4): the fixed scale 0 .. 1
        rgba[:, 3] = 0.15 + 0.85 * step_c[:, j]  # opacity grows with c too
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, ls="--", lw=0.8, color="gray"))
        ax.quiver(np.zeros(num_in), np.zeros(num_in), votes[:, j, 0], votes[:, j, 1], color=rgba,
                           angles="xy", scale_units="xy", scale=1, width=0.012)  # fmt: skip
        own = members == j
        if own.any():
            ax.scatter(votes[own, j, 0], votes[own, j, 1], s=40, facecolors="none", edgecolors="k", lw=0.8,
                       label=f"cluster of output {j}")  # fmt: skip
        trail = outputs[:iteration, j]  # (r, 2)
        ax.plot(trail[:, 0], trail[:, 1], "o-", color="gray", ms=3, lw=0.8, label="v_j, earlier iterations")
        ax.quiver(0, 0, step_v[j, 0], step_v[j, 1], angles="xy", scale_units="xy", scale=1, width=0.02,
                  color="k", alpha=0.8, zorder=3, label="v_j = squash(s_j)")  # fmt: skip
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_xlabel(f"vote component 1 ({components})" if j == 0 else "vote component 1")
        ax.set_ylabel("vote component 2")
        cluster = f", cluster mean c {step_c[own, j].mean():.2f}" if own.any() else ""
        ax.set_title(f"output {j}: |v| = {np.linalg.norm(_np(result.trace[iteration - 1].v[example, j])):.3f}{cluster}",
                     fontsize=9)  # fmt: skip
        if j == 0:
            ax.legend(fontsize=7, loc="lower left")
    scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)  # the arrows' colours (opacity aside)
    bar = fig.colorbar(scale, ax=list(axes[:num_out]), fraction=0.04, pad=0.01, shrink=0.9)
    bar.set_label(f"c_ij, fixed scale 0 .. 1 (uniform 1/N_out = {1 / num_out:.2f})")

    ax = axes[-1]
    rounds = np.arange(1, num_iterations + 1)
    colours = plt.get_cmap("tab10")
    for j in range(num_out):
        own = members == j
        if own.any():
            ax.plot(rounds, coupling[:, own, j].mean(axis=1), "o-", ms=3, color=colours(j % 10),
                    label=f"cluster {j} -> output {j}")  # fmt: skip
        if (~own).any():
            ax.plot(rounds, coupling[:, ~own, j].mean(axis=1), "--", color=colours(j % 10),
                    label=f"others -> output {j}")  # fmt: skip
    ax.axhline(1.0 / num_out, color="gray", ls=":", lw=1, label="uniform 1/N_out")
    ax.axvline(iteration, color="k", lw=0.8)
    ax.set_xlim(0.5, num_iterations + 0.5)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(rounds)
    ax.set_xlabel("routing iteration r (line: the one drawn)")
    ax.set_ylabel("mean coupling c_ij")
    ax.set_title("Mean coupling, every iteration", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: iteration {iteration} of {num_iterations}")
    return fig


def plot_coupling_polarisation(trace, example: int = 0, title: str = "Routing"):
    """How peaked the coupling coefficients are, per iteration, on fixed axes.

    Left: over the input capsules, the histogram of each one's largest coupling ``max_j c_ij``
    (``1/N_out`` = undecided, 1 = all its vote to one output), one line per iteration, on
    [0, 1] x [1, N_in]. Then one panel per iteration: every input capsule's coupling to the winning
    output (the longest after the last iteration), on a fixed colour scale 0 .. 1, as a
    ``T x (H' W')`` image (capsule ``n = t * H'W' + position``: a row per capsule type).

    Args:
        trace: list of ``R`` :class:`capslib.RoutingStep` with ``c`` ``(B, N_in, N_out)``.
        example: which example of the batch.

    Returns:
        The figure.
    """
    if not trace:
        raise ValueError("trace is empty: route with return_trace=True and at least one iteration")
    example = check_index("example", example, trace[0].c.shape[0])
    coupling = np.stack([_np(step.c[example]) for step in trace])  # (R, N_in, N_out)
    num_iterations, num_in, num_out = coupling.shape
    positions = 36 if num_in % 36 == 0 else num_in  # the 6x6 grid of MNIST's PrimaryCaps, else one row
    winner = int(np.linalg.norm(_np(trace[-1].v[example]), axis=-1).argmax())
    fig, axes = plt.subplots(1, num_iterations + 1, figsize=(4.8 + 2.4 * num_iterations, 3.8), layout="constrained",
                             gridspec_kw={"width_ratios": [2.0] + [1] * num_iterations})  # fmt: skip
    ax = axes[0]
    bins = np.linspace(0.0, 1.0, 41)
    for r in range(num_iterations):
        shade = plt.get_cmap("plasma")(r / max(1, num_iterations - 1) * 0.85)
        ax.hist(coupling[r].max(axis=1), bins=bins, histtype="step", lw=1.5, color=shade, label=f"r={r + 1}")
    ax.axvline(1.0 / num_out, color="gray", ls="--", lw=1, label="uniform 1/N_out")
    ax.set_yscale("log")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.8, num_in * 1.5)
    ax.set_xlabel("max over j of c_ij (each input capsule's largest coupling)")
    ax.set_ylabel("number of input capsules i")
    ax.set_title("How decided each input capsule is", fontsize=9)
    ax.legend(fontsize=7)
    shown = None
    for r, ax in enumerate(axes[1:]):
        per_capsule = coupling[r, :, winner].reshape(-1, positions)  # (T, H'W'): capsule n -> [t, position]
        shown = ax.imshow(per_capsule, cmap=SEQUENTIAL, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_xlabel("position row * 6 + col" if positions == 36 else "input capsule i")
        ax.set_ylabel("capsule type t" if positions == 36 else "")
        ax.set_title(f"r={r + 1}: c to class {winner}\n(mean {coupling[r, :, winner].mean():.3f})", fontsize=9)
    fig.colorbar(shown, ax=list(axes[1:]), fraction=0.04, pad=0.02, label=f"c_i,{winner} (fixed scale 0 .. 1)")
    fig.suptitle(title)
    return fig


def plot_margin_loss(m_plus: float = 0.9, m_minus: float = 0.1, lambda_: float = 0.5, ax=None):
    """Eq. 4 for one class against its capsule length ``|v_k|`` in [0, 1]; returns the axes.

    Present class (``T_k = 1``): ``max(0, m+ - |v|)^2``; absent class (``T_k = 0``):
    ``lambda * max(0, |v| - m-)^2``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    length = np.linspace(0.0, 1.0, 401)
    present = np.clip(m_plus - length, 0.0, None) ** 2
    absent = lambda_ * np.clip(length - m_minus, 0.0, None) ** 2
    ax.plot(length, present, color="tab:green", lw=2, label="class present (T_k = 1)")
    ax.plot(length, absent, color="tab:red", lw=2, label=f"class absent (T_k = 0), x lambda = {lambda_:.2f}")
    ax.axvline(m_plus, color="tab:green", ls="--", lw=1, label=f"m+ = {m_plus:.2f}")
    ax.axvline(m_minus, color="tab:red", ls="--", lw=1, label=f"m- = {m_minus:.2f}")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, max(1.0, float(present.max()), float(absent.max())) * 1.05)
    ax.set_xlabel("capsule length |v_k|")
    ax.set_ylabel("loss L_k")
    ax.set_title("Margin loss of one class")
    ax.legend(fontsize=8, loc="upper center")
    return ax


def plot_loss_comparison(m_plus: float = 0.9):
    """Margin loss vs cross-entropy for the true class: the loss, and the gradient the network receives.

    Both panels share one x axis, the true class's score: the softmax probability ``p`` for
    cross-entropy (loss ``-log p``), the capsule length ``|v|`` for the margin loss (loss
    ``max(0, m+ - |v|)^2``). The gradient is taken with respect to what each loss is fed: the
    logit ``z`` of the true class for cross-entropy (``d(-log p)/dz = p - 1``), the length
    ``|v|`` for the margin loss (``-2 max(0, m+ - |v|)``). Returns the figure.
    """
    score = np.linspace(0.005, 1.0, 400)
    margin = np.clip(m_plus - score, 0.0, None) ** 2
    margin_grad = -2.0 * np.clip(m_plus - score, 0.0, None)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax0.plot(score, -np.log(score), color="tab:purple", lw=2, label="cross-entropy -log p")
    ax0.plot(score, margin, color="tab:green", lw=2, label="margin loss, present class")
    ax0.axvline(m_plus, color="tab:green", ls="--", lw=1, label=f"m+ = {m_plus:.2f}")
    ax0.set_ylim(0.0, 3.0)
    ax0.set_xlabel("score of the true class (p for cross-entropy, |v| for margin)")
    ax0.set_ylabel("loss")
    ax0.set_title("Loss: cross-entropy is 0 only at p = 1")
    ax0.legend(fontsize=8)
    ax1.plot(score, score - 1.0, color="tab:purple", lw=2, label="cross-entropy: d(-log p)/dz = p - 1 (z: logit)")
    ax1.plot(score, margin_grad, color="tab:green", lw=2, label="margin: d loss/d|v| = -2 max(0, m+ - |v|)")
    ax1.axvline(m_plus, color="tab:green", ls="--", lw=1)
    ax1.axhline(0.0, color="k", lw=0.6)
    ax1.set_ylim(-2.1, 0.2)
    ax1.set_xlabel("score of the true class (p for cross-entropy, |v| for margin)")
    ax1.set_ylabel("gradient wrt the score fed to the loss")
    ax1.set_title("Gradient: cross-entropy's is 0 only at p = 1, the margin's from m+ on")
    ax1.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Present class: margin loss (m+ = {m_plus:.2f}) vs cross-entropy")
    fig.tight_layout()
    return fig
