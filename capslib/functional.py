"""Stateless pieces of CapsNet: the squash non-linearity and the two losses.

References are to Sabour, Frosst & Hinton 2017, "Dynamic Routing Between Capsules"
(arXiv 1710.09829). Shapes use the vocabulary of the package docstring.
"""

from __future__ import annotations

import weakref

import torch

__all__ = ["squash", "margin_loss", "reconstruction_loss", "check_labels", "mark_labels_checked"]


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 1: shrink a vector to length ``|s|^2 / (1 + |s|^2)`` keeping its direction.

    ``v = |s|^2 / (1 + |s|^2) * s / |s|``, written as ``s * |s| / (1 + |s|^2)`` so that the
    division by ``|s|`` never happens: at ``s = 0`` the output is 0 and the gradient is finite.
    ``eps`` under the square root keeps the gradient of ``|s|`` finite at zero.

    Always computed in float32 (or float64) even under autocast, because ``|s|^2`` of a
    half-precision vector overflows/underflows easily; the result is cast back to ``s.dtype``.

    Args:
        s: any shape ``(..., D)``; the capsule dimension is ``dim``.
        dim: the capsule dimension (pass it explicitly; the default is the last axis).
        eps: added to ``|s|^2`` under the square root only.

    Returns:
        Tensor of the same shape and dtype as ``s``, each vector along ``dim`` of length < 1.
    """
    compute_dtype = s.dtype if s.dtype in (torch.float32, torch.float64) else torch.float32
    s32 = s.to(compute_dtype)
    squared_norm = (s32 * s32).sum(dim=dim, keepdim=True)  # (..., 1, ...)
    norm = torch.sqrt(squared_norm + eps)
    v = s32 * (norm / (1.0 + squared_norm))
    return v.to(s.dtype)


# The range check reads the labels back from the device, which on a GPU is a synchronisation that
# stalls a launch-bound training step. One step hands the same labels to the model, to its mask and
# to the loss, so a tensor checked before (the same object, unchanged since: same version counter)
# against at most as many classes is not read again: one read-back per step instead of six.
_last_checked: tuple[weakref.ref, int, int] | None = None  # (labels, their version, num_classes)


def _version(labels: torch.Tensor) -> int | None:
    try:
        return labels._version
    except RuntimeError:  # inference-mode tensors keep no version counter: never cached
        return None


def _label_range(labels: torch.Tensor) -> tuple[int, int]:
    """``(min, max)`` of a non-empty integer tensor, read back in one transfer."""
    low, high = torch.stack((labels.min(), labels.max())).tolist()
    return low, high


def check_labels(labels: torch.Tensor, batch_size: int, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``labels`` is an integer tensor ``(B,)`` in ``[0, num_classes)``."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    if torch.compiler.is_compiling():  # a value check would split the compiled graph; eager mode checks
        return
    version = _version(labels)
    if _last_checked is not None and version is not None:
        checked, checked_version, checked_classes = _last_checked
        if checked() is labels and checked_version == version and num_classes >= checked_classes:
            return
    if labels.numel():
        low, high = _label_range(labels)
        if low < 0 or high >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got values from {low} to {high}")
    mark_labels_checked(labels, num_classes)


def mark_labels_checked(labels: torch.Tensor, num_classes: int) -> None:
    """Record that ``labels`` ``(B,)`` lie in ``[0, num_classes)`` without reading them back: for a training
    loop that checked its whole label set once (``capslib.train.fit`` does), so that its batches
    cost no device synchronisation. An in-place change to ``labels`` voids the record."""
    global _last_checked
    version = _version(labels)
    if version is not None:
        _last_checked = (weakref.ref(labels), version, num_classes)


def margin_loss(
    lengths: torch.Tensor,
    labels: torch.Tensor,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    lambda_: float = 0.5,
) -> torch.Tensor:
    """Eq. 4: ``L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2``.

    Summed over the classes ``k`` and averaged over the batch.

    Args:
        lengths: ``(B, N_out)`` capsule lengths ``|v_k|`` (the class scores).
        labels: ``(B,)`` integer class indices.
        m_plus, m_minus, lambda_: the paper's 0.9, 0.1 and 0.5.

    Returns:
        Scalar tensor.
    """
    if lengths.dim() != 2:
        raise ValueError(f"lengths must have shape (B, N_out), got {tuple(lengths.shape)}")
    batch_size, num_classes = lengths.shape
    check_labels(labels, batch_size, num_classes)
    present = torch.nn.functional.one_hot(labels, num_classes).to(lengths.dtype)  # (B, N_out)
    loss_present = present * torch.clamp(m_plus - lengths, min=0.0) ** 2
    loss_absent = lambda_ * (1.0 - present) * torch.clamp(lengths - m_minus, min=0.0) ** 2
    return (loss_present + loss_absent).sum(dim=1).mean(dim=0)


def reconstruction_loss(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Sum of squared pixel errors per image, averaged over the batch (Section 4.1).

    The paper scales this by 0.0005 in the total loss; that weight is applied by the caller
    (see :func:`capslib.train.total_loss`), not here.

    Args:
        reconstructions: ``(B, C, H, W)`` decoder output in [0, 1].
        images: ``(B, C, H, W)`` the inputs, in [0, 1].

    Returns:
        Scalar tensor.
    """
    if reconstructions.shape != images.shape:
        raise ValueError(
            f"reconstructions and images must have the same shape, got {tuple(reconstructions.shape)} "
            f"and {tuple(images.shape)}"
        )
    if images.dim() < 2:
        raise ValueError(f"images must have a batch axis, got shape {tuple(images.shape)}")
    squared_error = (reconstructions - images) ** 2
    return squared_error.flatten(start_dim=1).sum(dim=1).mean(dim=0)
