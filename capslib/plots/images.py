"""Images and what the first layers make of them: digits, a batch, Conv1's filters, feature maps.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`); images in [0, 1] are
drawn on the fixed grey scale 0 .. 1.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..utils import to_numpy as _np
from .common import DIVERGING, SEQUENTIAL, image2d, no_ticks, panel_grid

__all__ = ["plot_digit", "plot_images", "plot_filters", "plot_feature_maps"]


def plot_digit(image, title: str = "MNIST digit", ax=None, pixel_grid: bool = False):
    """Draw one image ``(1, H, W)`` or ``(H, W)`` with values in [0, 1]; returns the axes.

    With ``pixel_grid`` the axes are labelled in pixels (column x, row y) with ticks every 4 px.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    array = image2d(image)
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
    lines = max((str(caption).count("\n") + 1 for caption in captions), default=0) if captions is not None else 0
    # each row gets room for its captions above the images (else a caption runs into the row above)
    fig, axes = panel_grid(len(array), ncols, width=1.3, height=1.3 + 0.3 * lines)
    for k, (ax, image) in enumerate(zip(axes, array, strict=False)):
        ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0)
        no_ticks(ax)
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
    fig, axes = panel_grid(len(array), ncols, width=0.75, extra_height=0.9)
    for k, (ax, kernel) in enumerate(zip(axes, array[:, 0], strict=False)):
        limit = np.abs(kernel).max() or 1.0
        ax.imshow(kernel, cmap=DIVERGING, vmin=-limit, vmax=limit)
        no_ticks(ax)
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
    fig, axes = panel_grid(len(array), ncols, width=1.25, extra_height=0.9)
    vmax = array.max() or 1.0
    shown = None
    for ax, feature, label in zip(axes, array, labels, strict=False):
        shown = ax.imshow(feature, cmap=SEQUENTIAL, vmin=0.0, vmax=vmax)
        no_ticks(ax)
        ax.set_title(f"filter {label}", fontsize=7, pad=2)
    fig.suptitle(f"{title} (x, y = output column, row)", fontsize=10)
    fig.tight_layout()
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.02, label="activation (ReLU)")
    return fig
