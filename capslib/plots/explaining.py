"""Explaining away, drawn: one ambiguous part between two wholes (synthetic), and the real digits
where routing moves the most coupling (notebook 03).

The votes come from :func:`capslib.analysis.routing_lab.explaining_away_votes`, the shifts from
:func:`capslib.analysis.routing_lab.coupling_shift`; these functions only draw.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize

from ..utils import to_numpy as _np
from .common import DIVERGING, image2d, iteration_axis, no_ticks

__all__ = ["plot_explaining_away", "plot_routing_shift"]

WHOLES = ("A", "B")


def plot_explaining_away(result, iteration: int, roles, title: str = "Explaining away"):
    """The ambiguous part's votes and couplings at one iteration, and its coupling every iteration.

    Panels 1 and 2, whole A (output 0) and whole B (output 1): every vote for that whole is an
    arrow from the origin, coloured and made opaque by its coupling ``c_ij`` on a fixed scale
    0 .. 1; the ambiguous part's vote is the thick arrow with a star at its tip (its ``c`` in the
    title); ``v_j`` of this iteration is the black arrow, the dashed circle ``|v| = 1``. Panel 3:
    the ambiguous part's coupling to A and to B at every iteration, on a fixed 0 .. 1 axis, beside
    the mean coupling of A's parts to A and of B's parts to B. Axis limits depend on ``result``
    only, so a slider over ``iteration`` never moves them.

    Args:
        result: a :class:`capslib.RoutingResult` with a trace, of votes ``u_hat`` ``(1, N_in, 2, 2)``
            from :func:`capslib.analysis.routing_lab.explaining_away_votes`.
        iteration: which iteration to draw, 1-based, in ``[1, R]``.
        roles: ``(N_in,)`` long, ``-1`` for the ambiguous part, ``0`` / ``1`` for a part of A / B.

    Returns:
        The figure.
    """
    u_hat = _np(result.u_hat)
    if u_hat.ndim != 4 or u_hat.shape[2:] != (2, 2):
        raise ValueError(f"u_hat must have shape (B, N_in, 2, 2) (two wholes, 2-D votes), got {u_hat.shape}")
    num_iterations = len(result.trace)
    integer = isinstance(iteration, (int, np.integer)) and not isinstance(iteration, bool)
    if not integer or not 1 <= iteration <= num_iterations:
        raise ValueError(f"iteration must be an integer in [1, {num_iterations}], got {iteration!r}")
    votes = u_hat[0]  # (N_in, 2, 2)
    num_in = votes.shape[0]
    role = _np(roles).astype(int)
    if role.shape != (num_in,) or (role == -1).sum() != 1:
        raise ValueError(f"roles must have shape ({num_in},) with exactly one -1 (the ambiguous part), got {role}")
    part = int(np.flatnonzero(role == -1)[0])
    coupling = np.stack([_np(step.c[0]) for step in result.trace])  # (R, N_in, 2)
    outputs = np.stack([_np(step.v[0]) for step in result.trace])  # (R, 2, 2)
    step_c, step_v = coupling[iteration - 1], outputs[iteration - 1]  # (N_in, 2), (2, 2)
    limit = 1.15 * max(1.0, float(np.abs(votes).max()))
    cmap = ListedColormap(plt.get_cmap("plasma")(np.linspace(0.0, 0.9, 256)))  # no pale yellow end

    fig, axes = plt.subplots(1, 3, figsize=(12.4, 4.1), layout="constrained", gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for j, ax in enumerate(axes[:2]):
        rgba = cmap(step_c[:, j])  # (N_in, 4)
        rgba[:, 3] = 0.15 + 0.85 * step_c[:, j]
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, ls="--", lw=0.8, color="gray"))
        others = np.arange(num_in) != part
        ax.quiver(np.zeros(others.sum()), np.zeros(others.sum()), votes[others, j, 0], votes[others, j, 1],
                  color=rgba[others], angles="xy", scale_units="xy", scale=1, width=0.012)  # fmt: skip
        ax.quiver(0, 0, votes[part, j, 0], votes[part, j, 1], color=rgba[part], angles="xy", scale_units="xy",
                  scale=1, width=0.03, edgecolor="k", linewidth=0.8)  # fmt: skip
        ax.plot(*votes[part, j], "*", ms=14, mfc="none", mec="k", label="the ambiguous part's vote")
        ax.quiver(0, 0, step_v[j, 0], step_v[j, 1], angles="xy", scale_units="xy", scale=1, width=0.015,
                  color="k", alpha=0.8, zorder=3, label=f"v_{WHOLES[j]} = squash(s)")  # fmt: skip
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_xlabel("vote component 1")
        ax.set_ylabel("vote component 2")
        supporters = int((role == j).sum())
        ax.set_title(f"whole {WHOLES[j]} (output {j}, {supporters} supporting parts)\n"
                     f"|v| = {np.linalg.norm(step_v[j]):.3f}; ambiguous part's c = {step_c[part, j]:.3f}",
                     fontsize=9)  # fmt: skip
        ax.legend(fontsize=7, loc="lower left")
    scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    bar = fig.colorbar(scale, ax=list(axes[:2]), fraction=0.04, pad=0.01, shrink=0.9)
    bar.set_label("c_ij, fixed scale 0 .. 1 (uniform 1/2 = 0.50)")

    ax = axes[2]
    rounds = np.arange(1, num_iterations + 1)
    colours = ("tab:blue", "tab:orange")
    for j, (marker, width) in enumerate((("o-", 4.0), ("s-", 1.6))):  # A drawn wide under B: both show when equal
        ax.plot(rounds, coupling[:, part, j], marker, color=colours[j], lw=width, ms=4 + width,
                label=f"ambiguous part -> {WHOLES[j]}")  # fmt: skip
        own = role == j
        if own.any():
            ax.plot(rounds, coupling[:, own, j].mean(axis=1), "--", color=colours[j],
                    label=f"parts of {WHOLES[j]} -> {WHOLES[j]} (mean)")  # fmt: skip
    iteration_axis(ax, iteration, num_iterations, 0.5, "undecided 1/2")
    ax.set_xlabel("routing iteration r (line: the one drawn)")
    ax.set_ylabel("coupling c (fixed scale 0 .. 1)")
    ax.set_title("The ambiguous part's coupling, every iteration", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{title}: iteration {iteration} of {num_iterations}")
    return fig


def plot_routing_shift(images, shifts, captions=None, positions: int = 36, title: str = "Routing shift"):
    """Digits above, and below each one where on the grid routing moved coupling to its winner.

    Each lower panel is the shift ``c_ia - c_ib`` (winner minus runner-up) of every input capsule,
    averaged over the capsule types at each grid position (``N_in = T * positions``, capsule
    ``n = t * positions + position``, as the PrimaryCaps layer orders them), on one diverging
    colour scale for all panels, symmetric and fitted to the largest value shown (stated in the
    colour bar's label), so that the panels compare with one another.

    Args:
        images: ``(K, 1, H, W)`` or ``(K, H, W)`` in [0, 1], drawn dark on light as the series does.
        shifts: ``(K, N_in)`` per-capsule shifts, e.g. ``coupling_shift(...)["per_capsule"]``.
        captions: optional ``K`` strings written above the digits.
        positions: grid positions per capsule type (36: the 6x6 grid of MNIST's PrimaryCaps).

    Returns:
        The figure.
    """
    array, values = _np(images), _np(shifts)
    count = len(array)
    side = int(round(np.sqrt(positions)))
    if values.ndim != 2 or len(values) != count or values.shape[1] % positions or side * side != positions:
        raise ValueError(
            f"expected shifts (K, N_in) with K = {count} images and N_in a multiple of a square number of "
            f"positions ({positions}), got {values.shape}"
        )
    if captions is not None and len(captions) != count:
        raise ValueError(f"expected one caption per image ({count}), got {len(captions)}")
    grids = values.reshape(count, -1, positions).mean(axis=1).reshape(count, side, side)  # (K, side, side)
    limit = float(np.abs(grids).max()) or 1.0
    fig, axes = plt.subplots(2, count, figsize=(1.6 * count + 1.0, 4.2), squeeze=False, layout="constrained")
    shown = None
    for k in range(count):
        top, bottom = axes[0, k], axes[1, k]
        top.imshow(image2d(array[k]), cmap="gray_r", vmin=0.0, vmax=1.0)
        no_ticks(top)
        if captions is not None:
            top.set_title(captions[k], fontsize=8)
        shown = bottom.imshow(grids[k], cmap=DIVERGING, vmin=-limit, vmax=limit, interpolation="nearest")
        bottom.set_xticks([0, side - 1])
        bottom.set_yticks([0, side - 1])
        bottom.set_xlabel("grid col", fontsize=7)
        if k == 0:
            top.set_ylabel("the digit (pixels)", fontsize=8)
            bottom.set_ylabel("grid row", fontsize=7)
    fig.colorbar(shown, ax=list(axes[1]), fraction=0.04, pad=0.01, label="c_winner - c_runner-up")
    fig.suptitle(f"{title}\n(lower row: mean over capsule types at each grid position; colour scale +-{limit:.4f}, "
                 "fitted to these panels)", fontsize=10)  # fmt: skip
    return fig
