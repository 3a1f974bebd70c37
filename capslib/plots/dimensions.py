"""What a digit capsule's dimensions encode: the paper's Figure 4 (each dimension perturbed, a row of
reconstructions each) and one reconstruction from a pose changed by hand.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`); the tensors come
from :mod:`capslib.analysis.interpret` (:func:`plot_reconstruction_from_pose` decodes there).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from ..analysis.interpret import decode_pose
from ..utils import to_numpy as _np

__all__ = ["plot_dimension_grid", "plot_reconstruction_from_pose"]


def plot_dimension_grid(perturbed: dict[str, torch.Tensor], ax=None, title: str | None = None):
    """Draw :func:`capslib.analysis.interpret.perturb_dimensions`' reconstructions as one mosaic: a row per dimension.

    Args:
        perturbed: its output (``reconstructions`` ``(D_out, V, C, H, W)``, ``values`` ``(V,)``).
        ax: matplotlib axes; None makes a new figure.

    Returns:
        The figure.
    """
    recon = perturbed["reconstructions"]
    dims, num_values, _, height, width = recon.shape
    mosaic = recon[:, :, 0].permute(0, 2, 1, 3).reshape(dims * height, num_values * width)  # (D*H, V*W)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.62 * num_values + 1.2, 0.62 * dims + 0.8))
    ax.imshow(_np(mosaic), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([width * (k + 0.5) for k in range(num_values)])
    ax.set_xticklabels([f"{float(v):+.2f}" for v in perturbed["values"]], rotation=90, fontsize=8)
    ax.set_yticks([height * (d + 0.5) for d in range(dims)])
    ax.set_yticklabels([str(d) for d in range(dims)], fontsize=8)
    ax.set_xlabel("offset added to the dimension")
    ax.set_ylabel("capsule dimension")
    ax.set_title(title or f"Perturbing each dimension of digit capsule {int(perturbed['class_index'])}")
    for k in range(1, dims):
        ax.axhline(k * height - 0.5, color="white", lw=0.5)
    for k in range(1, num_values):
        ax.axvline(k * width - 0.5, color="white", lw=0.5)
    ax.figure.tight_layout()
    return ax.figure


def plot_reconstruction_from_pose(
    model: torch.nn.Module,
    pose: torch.Tensor,
    class_index: int,
    offsets: Sequence[float] | None = None,
    title: str | None = None,
):
    """Decode one digit capsule ``pose`` + ``offsets``: the reconstruction and the pose as bars.

    Args:
        model: a CapsNet with a decoder, run by :func:`capslib.analysis.interpret.decode_pose`.
        pose: ``(D_out,)`` the digit capsule of class ``class_index`` (e.g. ``perturb_dimensions(...)["pose"]``).
        offsets: ``D_out`` numbers added to the pose (None: zeros).

    Returns:
        The figure: the unchanged reconstruction, the changed one, and the pose before/after.
    """
    if pose.dim() != 1:
        raise ValueError(f"pose must have shape (D_out,), got {tuple(pose.shape)}")
    dims = pose.shape[0]
    offsets = torch.zeros(dims) if offsets is None else torch.as_tensor(offsets, dtype=pose.dtype)
    if offsets.shape != (dims,):
        raise ValueError(f"offsets must have {dims} numbers, got shape {tuple(offsets.shape)}")
    pose, offsets = pose.cpu(), offsets.cpu()
    recon = decode_pose(model, torch.stack([pose, pose + offsets]), class_index)  # (2, C, H, W)

    fig, axes = plt.subplots(1, 3, figsize=(10, 3), gridspec_kw={"width_ratios": [1, 1, 2.2]})
    for ax, picture, name in zip(axes[:2], recon, ("unchanged pose", "pose + offsets"), strict=True):
        ax.imshow(_np(picture[0]), cmap="gray_r", vmin=0, vmax=1)
        ax.set(title=name, xlabel="x (pixels)", ylabel="y (pixels)")
    steps = torch.arange(dims).numpy()
    axes[2].bar(steps - 0.2, _np(pose), width=0.4, label="pose", color="tab:grey")
    axes[2].bar(steps + 0.2, _np(pose + offsets), width=0.4, label="pose + offsets", color="tab:orange")
    axes[2].set(title=f"the {dims} numbers the decoder sees", xlabel="capsule dimension", ylabel="value")
    axes[2].set_xticks(steps)
    axes[2].legend(fontsize=8)
    fig.suptitle(title or f"Reconstruction from digit capsule {class_index}")
    fig.tight_layout()
    return fig
