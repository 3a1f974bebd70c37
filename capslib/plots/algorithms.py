"""Routing algorithms side by side: the same votes, each algorithm's coupling on one fixed scale.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`); the routing itself is
:func:`capslib.analysis.routing_lab.route_every_way`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize

from ..utils import check_index
from ..utils import to_numpy as _np
from .common import iteration_axis

__all__ = ["plot_routing_algorithms"]

# What each algorithm's "c" is, for the panel titles.
COUPLING_NAMES = {
    "dynamic": "coupling c",
    "uniform": "c = 1/N_out",
    "self_attention": "softmax c",
    "em": "assignment R",
}


def plot_routing_algorithms(results: dict, iteration: int, membership=None, output: int = 0, title: str = ""):
    """One panel per routing algorithm: the votes for one output, coloured by their coupling.

    In each panel every vote ``u_hat_{output|i}`` (its first two components) is an arrow from the
    origin, coloured and made opaque by that algorithm's ``c_i,output`` on the fixed scale 0 .. 1;
    the cluster of ``output`` is circled; the thick black arrow is the algorithm's ``v_output``.
    An algorithm that does not iterate is drawn at its one pass whatever ``iteration`` says. The
    last panel follows the cluster's mean coupling to ``output`` over the iterations, one line per
    algorithm. Axis limits depend only on the votes, so a slider over ``iteration`` never moves them.

    Args:
        results: ``{name: RoutingResult}`` of the same votes ``(B, N_in, N_out, D)``, ``D >= 2``
            (:func:`capslib.analysis.routing_lab.route_every_way`).
        iteration: 1-based, in ``[1, R]`` with ``R`` the most iterations any result ran.
        membership: optional ``(N_in,)`` long, the output whose cluster each input belongs to (-1: none).
        output: which output capsule's votes to draw.
        title: the figure's title.

    Returns:
        The figure.

    Raises:
        ValueError: no results, results of different votes, or an ``iteration``/``output`` out of range.
    """
    if not results:
        raise ValueError("results must hold at least one algorithm's RoutingResult, got none")
    names = list(results)
    votes_all = _np(results[names[0]].u_hat)
    if votes_all.ndim != 4 or votes_all.shape[-1] < 2:
        raise ValueError(f"u_hat must have shape (B, N_in, N_out, D) with D >= 2, got {votes_all.shape}")
    for name in names[1:]:
        if _np(results[name].u_hat).shape != votes_all.shape or not np.allclose(_np(results[name].u_hat), votes_all):
            raise ValueError(f"every result must route the same votes; {name!r} routed others than {names[0]!r}")
    rounds = max(len(results[name].trace) for name in names)
    integer = isinstance(iteration, (int, np.integer)) and not isinstance(iteration, bool)
    if not integer or not 1 <= iteration <= rounds:
        raise ValueError(f"iteration must be an integer in [1, {rounds}], got {iteration!r}")
    num_in, num_out = votes_all.shape[1:3]
    output = check_index("output", output, num_out)
    votes = votes_all[0, :, output, :2]  # (N_in, 2)
    members = np.full(num_in, -1) if membership is None else _np(membership).astype(int)
    if members.shape != (num_in,):
        raise ValueError(f"membership must have shape (N_in,) = ({num_in},), got {members.shape}")
    own = members == output
    limit = 1.15 * max(1.0, float(np.abs(votes).max()))
    cmap = ListedColormap(plt.get_cmap("plasma")(np.linspace(0.0, 0.9, 256)))  # no pale yellow end

    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * len(names) + 4.4, 3.9), layout="constrained",
                             gridspec_kw={"width_ratios": [1] * len(names) + [1.4]})  # fmt: skip
    for ax, name in zip(axes, names, strict=False):
        trace = results[name].trace
        step = trace[min(iteration, len(trace)) - 1]
        c = _np(step.c[0, :, output])  # (N_in,)
        v = _np(step.v[0, output, :2])  # (2,)
        rgba = cmap(c)
        rgba[:, 3] = 0.15 + 0.85 * c
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, ls="--", lw=0.8, color="gray"))
        ax.quiver(np.zeros(num_in), np.zeros(num_in), votes[:, 0], votes[:, 1], color=rgba, angles="xy",
                  scale_units="xy", scale=1, width=0.012)  # fmt: skip
        if own.any():
            ax.scatter(votes[own, 0], votes[own, 1], s=40, facecolors="none", edgecolors="k", lw=0.8,
                       label=f"cluster of output {output}")  # fmt: skip
        ax.quiver(0, 0, v[0], v[1], angles="xy", scale_units="xy", scale=1, width=0.02, color="k", alpha=0.8,
                  zorder=3, label=f"v_{output}")  # fmt: skip
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_xlabel("vote component 1")
        ax.set_ylabel("vote component 2" if ax is axes[0] else "")
        when = f"iteration {min(iteration, len(trace))} of {len(trace)}" if len(trace) > 1 else "one pass"
        cluster = f", cluster mean {c[own].mean():.2f}" if own.any() else ""
        ax.set_title(f"{name}: {when}\n{COUPLING_NAMES.get(name, 'c')}{cluster}; |v| = {np.linalg.norm(v):.2f}",
                     fontsize=9)  # fmt: skip
        if ax is axes[0]:
            ax.legend(fontsize=7, loc="lower left")
    scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    bar = fig.colorbar(scale, ax=list(axes[: len(names)]), fraction=0.04, pad=0.01, shrink=0.9)
    bar.set_label(f"c_i,{output}, fixed scale 0 .. 1 (uniform 1/N_out = {1 / num_out:.2f})")

    ax = axes[-1]
    steps = np.arange(1, rounds + 1)
    colours = plt.get_cmap("tab10")
    for k, name in enumerate(names):
        trace = results[name].trace
        if not own.any():
            break
        means = np.array([_np(step.c[0, own, output]).mean() for step in trace])  # (R_name,)
        if len(trace) == 1:  # one pass: the same coupling at every iteration
            ax.plot(steps, np.full(rounds, means[0]), "--", color=colours(k), label=f"{name} (one pass)")
        else:
            ax.plot(steps[: len(trace)], means, "o-", ms=3, color=colours(k), label=name)
    iteration_axis(ax, iteration, rounds, 1.0 / num_out, "uniform 1/N_out")
    ax.set_xlabel("iteration (line: the one drawn)")
    ax.set_ylabel(f"cluster's mean coupling to output {output}")
    ax.set_title("The cluster's coupling, every iteration", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title or f"The same votes, every routing algorithm: output {output}, iteration {iteration}")
    return fig
