"""What every plot module shares: the colour maps, and helpers for images, panel grids and colour bars.

The plot modules hold pure plotting functions: tensors (or result dicts) in, a matplotlib figure or
axes out. Each draws from its arguments only (a few take the model and get their tensors from
:mod:`capslib.analysis`), so a notebook calls it once statically and then wraps it in
:func:`capslib.plots.widgets.interactive_plot`. A function that draws one panel takes ``ax=None``
and returns the axes; one that draws several makes its own figure and returns it. Every panel has
a title and labelled axes. Colour and axis scales are fixed by the function or by the whole result
passed in, never by the slider position, so that a small change looks small.

Tensors may live on any device and carry gradients; :func:`capslib.utils.to_numpy` detaches them
and moves them to the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..utils import to_numpy

__all__ = [
    "DIVERGING",
    "SEQUENTIAL",
    "image2d",
    "panel_grid",
    "no_ticks",
    "colourbar_extend",
    "iteration_axis",
    "image_count",
    "mean_bar",
]

DIVERGING = "RdBu_r"  # signed values: weights, agreements (red > 0, blue < 0, white = 0)
SEQUENTIAL = "viridis"  # non-negative values: activations, lengths, coupling coefficients


def image2d(image, name: str = "image") -> np.ndarray:
    """``(1, H, W)``, ``(1, 1, H, W)`` or ``(H, W)`` -> ``(H, W)`` numpy array."""
    array = to_numpy(image)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be one image (1, H, W) or (H, W), got shape {tuple(to_numpy(image).shape)}")
    return array


def panel_grid(n: int, ncols: int, width: float = 1.2, height: float | None = None, extra_height: float = 0.6):
    """A figure of ``n`` panels, ``ncols`` to a row (fewer if ``n`` is smaller), each ``width`` x
    ``height`` inches (square by default); the unused panels of the last row are switched off.

    Returns:
        ``(figure, list of the n + unused axes, row by row)``.
    """
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    height = width if height is None else height
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + extra_height), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def colourbar_extend(values, vmin: float, vmax: float) -> str:
    """The colour bar's ``extend``: an arrow at each end that ``values`` go past (they are drawn clipped)."""
    array = to_numpy(values)
    below, above = bool((array < vmin).any()), bool((array > vmax).any())
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get((below, above), "both")


def iteration_axis(ax, iteration: int, rounds: int, reference: float, reference_label: str) -> None:
    """A coupling-per-iteration panel's frame: iterations 1..``rounds`` on x, the coupling on its full
    0..1 scale, a dotted line at ``reference`` (the undecided share), a line at the ``iteration`` drawn."""
    ax.axhline(reference, color="gray", ls=":", lw=1, label=reference_label)
    ax.axvline(iteration, color="k", lw=0.8)
    ax.set_xlim(0.5, rounds + 0.5)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(range(1, rounds + 1))


def image_count(counts) -> str:
    """``"10,000 images"`` for the image counts the runs were measured on (a range if they differ),
    so an axis says what a smoke or fast-mode run measured, not what a full one would."""
    counts = sorted({int(c) for c in counts if c is not None})
    if not counts:
        return "images"
    return f"{counts[0]:,} images" if len(counts) == 1 else f"{counts[0]:,}-{counts[-1]:,} images"


def mean_bar(ax, x: float, values: Sequence[float], colour: str, width: float) -> None:
    """A bar at the mean of ``values``, +- one sample standard deviation, every value as a dot."""
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    ax.bar(x, mean, color=colour, alpha=0.35, width=width)
    ax.errorbar(x, mean, yerr=std, color="black", capsize=4, lw=1)
    spread = np.linspace(-0.25, 0.25, len(values)) * width if len(values) > 1 else np.zeros(1)
    ax.plot(x + spread, values, "k.", ms=5)
