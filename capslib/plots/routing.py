"""Dynamic routing, iteration by iteration: output lengths and mean coupling, synthetic votes as
arrows (the routing lab), and how decided the coupling coefficients become.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`). Every coupling scale
is fixed (0 .. 1, or around the uniform share ``1/N_out``), never fitted to the data.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, TwoSlopeNorm

from ..utils import check_index
from ..utils import to_numpy as _np
from .common import DIVERGING, SEQUENTIAL, iteration_axis

__all__ = ["plot_routing_iterations", "plot_routing_lab", "plot_coupling_polarisation"]


def _coupling_histograms(ax, values: np.ndarray, num_out: int, max_iterations: int) -> None:
    """One step histogram per iteration of ``values`` ``(R, N_in)`` in [0, 1], on the fixed axes
    [0, 1] x [0.8, 1.5 N_in]; counts on a log scale, so a few decided capsules show beside a
    thousand undecided ones."""
    bins = np.linspace(0.0, 1.0, 41)
    for r, row in enumerate(values):
        shade = plt.get_cmap("plasma")(r / max(1, max_iterations - 1) * 0.85)
        ax.hist(row, bins=bins, histtype="step", lw=1.5, color=shade, label=f"r={r + 1}")
    ax.axvline(1.0 / num_out, color="gray", ls="--", lw=1, label="uniform 1/N_out")
    ax.set_yscale("log")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.8, values.shape[1] * 1.5)
    ax.set_ylabel("number of input capsules i")


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
    _coupling_histograms(ax2, coupling[:, :, target], num_out, max_iterations)
    ax2.set_xlabel(f"c_i,{target} (coupling of input capsule i to class {target})")
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
            components are drawn), e.g. of :func:`capslib.analysis.routing_lab.synthetic_votes`.
        iteration: which iteration to draw, 1-based, in ``[1, R]``.
        membership: optional ``(N_in,)`` long, the output whose cluster each input capsule
            belongs to (``-1`` for none), as :func:`capslib.analysis.routing_lab.synthetic_votes` returns.
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
    iteration_axis(ax, iteration, num_iterations, 1.0 / num_out, "uniform 1/N_out")
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
    _coupling_histograms(ax, coupling.max(axis=2), num_out, num_iterations)
    ax.set_xlabel("max over j of c_ij (each input capsule's largest coupling)")
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
