"""Stateless pieces of CapsNet: the squash non-linearity, the two losses and the input checks.

References are to Sabour, Frosst & Hinton 2017, "Dynamic Routing Between Capsules"
(arXiv 1710.09829). Shapes use the vocabulary of the package docstring.
"""

from __future__ import annotations

import math
import operator

import torch

__all__ = [
    "squash",
    "efficient_squash",
    "margin_loss",
    "reconstruction_loss",
    "check_labels",
    "check_label_range",
    "check_image_range",
    "class_scores",
    "correct_predictions",
    "check_iterations",
    "check_agreement_scale",
    "autocast_enabled",
    "IMAGE_RANGE_TOLERANCE",
]

IMAGE_RANGE_TOLERANCE = 1e-6
"""How far outside [0, 1] a pixel may lie and still pass :func:`check_image_range`: room for float
rounding (``x / 255`` of a uint8 image is exact, other scalings are not), far below one grey level."""


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


def efficient_squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """Efficient-CapsNet's squash (Mazzia et al. 2021): ``v = (1 - e^{-|s|}) s / |s|``.

    Steeper than Eq. 1 near zero (length ``~|s|`` instead of ``~|s|^2``), so short vectors keep
    more of their length. Written as ``s * (1 - e^{-|s|}) / |s|`` with ``|s| = sqrt(|s|^2 + eps)``:
    at ``s = 0`` the output is 0, never NaN. Computed in float32 (or float64), cast back.

    Args:
        s: any shape ``(..., D)``; the capsule dimension is ``dim``.
        dim: the capsule dimension.
        eps: added to ``|s|^2`` under the square root only.

    Returns:
        Tensor of the same shape and dtype as ``s``, each vector along ``dim`` of length < 1.
    """
    compute_dtype = s.dtype if s.dtype in (torch.float32, torch.float64) else torch.float32
    s32 = s.to(compute_dtype)
    norm = torch.sqrt((s32 * s32).sum(dim=dim, keepdim=True) + eps)  # (..., 1, ...)
    v = s32 * (-torch.expm1(-norm) / norm)  # 1 - e^{-|s|} = -expm1(-|s|), exact for small |s|
    return v.to(s.dtype)


def check_labels(labels: torch.Tensor, batch_size: int, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``labels`` is an integer tensor ``(B,)`` of class indices.

    Any integer dtype is accepted (the callers' ``one_hot`` takes them as ``labels.long()``). The
    value range ``[0, num_classes)`` is checked here only for labels on the CPU, where it costs
    nothing: on a GPU it would read the labels back, a synchronisation in every step. Data entering
    on a GPU is range-checked once, on the CPU, where it enters (:func:`capslib.training.loop.fit`,
    :func:`capslib.evaluation.accuracy.evaluate` call :func:`check_label_range` on the whole set).
    """
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    # Under torch.compile a value check would split the graph; compiled_or_eager checks eagerly first.
    if labels.device.type == "cpu" and not torch.compiler.is_compiling():
        check_label_range(labels, num_classes)


def check_iterations(iterations: object) -> int:
    """Return ``iterations`` as an int, or raise ``ValueError`` if it is not an integer >= 1."""
    try:
        value = operator.index(iterations)  # ints and NumPy integers; not floats
    except TypeError:
        value = None
    if isinstance(iterations, bool) or value is None or value < 1:
        raise ValueError(f"routing iterations must be an integer >= 1, got {iterations!r}")
    return value


def check_agreement_scale(agreement_scale: object) -> float:
    """Return ``agreement_scale`` as a float, or raise ``ValueError`` unless it is a finite number >= 0."""
    if (
        isinstance(agreement_scale, bool)
        or not isinstance(agreement_scale, (int, float))
        or not (math.isfinite(agreement_scale) and agreement_scale >= 0)
    ):
        raise ValueError(f"agreement_scale must be a finite number >= 0, got {agreement_scale!r}")
    return float(agreement_scale)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (False for a device type autocast does not know)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # e.g. "meta"
        return False


def check_label_range(labels: torch.Tensor, num_classes: int, name: str = "labels") -> None:
    """Raise ``ValueError`` unless every value of the integer tensor ``labels`` lies in ``[0, num_classes)``.

    Reads the labels' minimum and maximum (a device synchronisation off the CPU): call it once per
    dataset, not per step.
    """
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values from {low} to {high}")


def check_image_range(images: torch.Tensor, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is floating point, finite, and lies in [0, 1].

    CapsNet takes raw pixels scaled to [0, 1] (its decoder ends in a sigmoid and is compared with
    the input); the two usual mistakes, pixels in 0-255 and images standardised with a dataset's
    mean and std, run without any error but lose accuracy, so the message names the range that
    came and the fix. :data:`IMAGE_RANGE_TOLERANCE` is allowed either side for float rounding.

    Reads the minimum and maximum (a device synchronisation off the CPU): call it once per dataset
    where data enters (:func:`capslib.evaluation.accuracy.evaluate`, the training data loader), not per step.
    :meth:`capslib.CapsNet.check_images` calls it for every batch on the CPU only, where it is free.

    Args:
        images: any shape, e.g. ``(B, C, H, W)`` or a whole dataset ``(N, C, H, W)``.
        name: what the images are, for the message ("test images").
    """
    if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point:
        what = f"dtype {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"{name} must be a floating-point tensor in [0, 1], got {what}; convert uint8 pixels with x.float() / 255"
        )
    if images.numel() == 0:
        return
    # NaN propagates through the minimum and maximum, so one pass finds both kinds of fault.
    low, high = torch.stack(torch.aminmax(images.detach())).tolist()  # one read-back
    if not (math.isfinite(low) and math.isfinite(high)):
        nans, infinities = int(torch.isnan(images).sum()), int(torch.isinf(images).sum())
        raise ValueError(
            f"{name} must be finite, got {nans + infinities} non-finite values ({nans} NaN, {infinities} infinite) "
            f"among {images.numel()}: repair or drop those images; a NaN pixel makes every prediction NaN"
        )
    tolerance = IMAGE_RANGE_TOLERANCE
    if low >= -tolerance and high <= 1.0 + tolerance:
        return
    if low >= -tolerance and 2.0 < high <= 255.0 + tolerance:
        fix = "this looks like pixels in 0-255: divide by 255"
    elif abs(low - (0.0 - 0.1307) / 0.3081) < 1e-3 and high <= (1.0 - 0.1307) / 0.3081 + 1e-3:
        fix = (
            "this looks like standard-normalised MNIST ((x - 0.1307) / 0.3081); pass the raw pixels / 255 "
            "instead (x * 0.3081 + 0.1307 undoes it), capslib normalises nothing"
        )
    elif -1.0 - tolerance <= low < -0.5 and high <= 1.0 + tolerance:
        fix = (
            "this looks like images scaled to [-1, 1] (Normalize(0.5, 0.5)); pass (x + 1) / 2 instead, "
            "capslib normalises nothing"
        )
    elif low < -tolerance:
        fix = (
            "negative pixels look like normalised images (mean subtracted, divided by the std); pass the raw "
            "pixels / 255 instead, capslib normalises nothing"
        )
    else:
        fix = "scale them into [0, 1] (raw pixels / their maximum, 255 for 8-bit images)"
    raise ValueError(f"{name} must lie in [0, 1], got values from {low:.3g} to {high:.3g}: {fix}")


def margin_loss(
    lengths: torch.Tensor,
    labels: torch.Tensor,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    lambda_: float = 0.5,
) -> torch.Tensor:
    """Eq. 4: ``L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2``.

    Summed over the classes ``k`` and averaged over the batch. ``T_k = 1`` for every class present:
    one per image for MNIST, two for MultiMNIST (Section 6: each digit's capsule must be long).

    Args:
        lengths: ``(B, N_out)`` capsule lengths ``|v_k|`` (the class scores).
        labels: ``(B,)`` integer class indices, or ``(B, K)`` for ``K`` classes present in each image.
        m_plus, m_minus, lambda_: the paper's 0.9, 0.1 and 0.5.

    Returns:
        Scalar tensor.
    """
    if lengths.dim() != 2:
        raise ValueError(f"lengths must have shape (B, N_out), got {tuple(lengths.shape)}")
    batch_size, num_classes = lengths.shape
    if batch_size == 0:
        raise ValueError("margin_loss over no examples (B = 0) is undefined: the batch mean of nothing")
    if isinstance(labels, torch.Tensor) and labels.dim() == 2:  # K targets per image
        if labels.shape[0] != batch_size:
            raise ValueError(f"labels must be (B,) or (B, K) with B = {batch_size}, got {tuple(labels.shape)}")
        check_labels(labels.flatten(), labels.numel(), num_classes)
        present = torch.nn.functional.one_hot(labels.long(), num_classes).amax(dim=1).to(lengths.dtype)  # (B, N_out)
    else:
        check_labels(labels, batch_size, num_classes)
        present = torch.nn.functional.one_hot(labels.long(), num_classes).to(lengths.dtype)  # (B, N_out)
    loss_present = present * torch.clamp(m_plus - lengths, min=0.0) ** 2
    loss_absent = lambda_ * (1.0 - present) * torch.clamp(lengths - m_minus, min=0.0) ** 2
    return (loss_present + loss_absent).sum(dim=1).mean(dim=0)


def reconstruction_loss(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Sum of squared pixel errors per image, averaged over the batch (Section 4.1).

    The paper scales this by 0.0005 in the total loss; that weight is applied by the caller (the
    training loss), not here.

    Args:
        reconstructions: ``(B, C, H, W)`` decoder output in [0, 1]; ``(B, K, C, H, W)`` for one
            reconstruction per digit (MultiMNIST), whose errors are summed over the ``K`` digits.
        images: the targets, the shape of ``reconstructions``, in [0, 1].

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
    if images.shape[0] == 0:
        raise ValueError("reconstruction_loss over no examples (B = 0) is undefined: the batch mean of nothing")
    squared_error = (reconstructions - images) ** 2
    return squared_error.flatten(start_dim=1).sum(dim=1).mean(dim=0)


def class_scores(output) -> torch.Tensor:
    """The ``(B, N_out)`` scores whose argmax is the predicted class: a CapsNet output's capsule
    lengths, or the logits a baseline CNN (:mod:`capslib.baselines`) returns as they are."""
    return output if isinstance(output, torch.Tensor) else output.lengths


def correct_predictions(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` True where the prediction is right.

    Args:
        scores: ``(B, N_out)`` class scores (:func:`class_scores`).
        labels: ``(B,)`` one class per image: right when it has the highest score; or ``(B, K)``
            with ``K`` different classes per image (MultiMNIST): right only when the ``K`` highest
            scores are exactly those classes, in any order (the paper's metric).
    """
    if labels.dim() == 1:
        return scores.argmax(dim=1) == labels
    top = scores.topk(labels.shape[1], dim=1).indices  # (B, K)
    return torch.sort(top, dim=1).values.eq(torch.sort(labels, dim=1).values).all(dim=1)
