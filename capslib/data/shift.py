"""Whole-pixel shifts, zero filled: the paper's training augmentation, MultiMNIST's placement of
each digit, and :func:`capslib.analysis.equivariance.shift_image`, all through :func:`shift_images`.

A shift copies every pixel value unchanged (no interpolation); pixels pushed over the border are
lost and uncovered ones are 0, nothing wraps round.
"""

from __future__ import annotations

import torch

__all__ = ["shift_images", "random_shift"]


def shift_images(images: torch.Tensor, shifts: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image by its own whole number of pixels, zero filled, nothing wrapping round.

    Args:
        images: ``(B, C, H, W)`` on any device.
        shifts: ``(B, 2)`` integer ``(dy, dx)`` per image (down, right), each in ``[-max_shift, max_shift]``.
        max_shift: the largest ``|shift|`` allowed (the padding used).

    Returns:
        ``(B, C, H, W)`` shifted copy, same dtype and device.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    if tuple(shifts.shape) != (batch, 2) or shifts.is_floating_point():
        raise ValueError(
            f"shifts must be integer (B, 2) = ({batch}, 2) (dy, dx) per image, got {tuple(shifts.shape)} {shifts.dtype}"
        )
    # Checked on the shifts as given (callers pass CPU tensors), so a GPU batch is never read back.
    if max_shift < 0 or (batch and int(shifts.abs().max()) > max_shift):
        raise ValueError(
            f"every shift must lie in [-{max_shift}, {max_shift}] pixels, got up to {int(shifts.abs().max())}"
        )
    shifts = shifts.to(images.device).T  # (2, B): dy, dx
    # One gather for the whole batch, each image reading its own window of the padded copy.
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)  # (B, C, H + 2m, W + 2m)
    rows = torch.arange(height, device=images.device) + max_shift - shifts[0].unsqueeze(1)  # (B, H)
    cols = torch.arange(width, device=images.device) + max_shift - shifts[1].unsqueeze(1)  # (B, W)
    batch_index = torch.arange(batch, device=images.device).view(batch, 1, 1)  # (B, 1, 1)
    # Advanced indexing puts the broadcast (B, H, W) axes first, then the sliced C axis.
    out = padded[batch_index, :, rows.unsqueeze(2), cols.unsqueeze(1)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def random_shift(images: torch.Tensor, max_shift: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's augmentation: shift each image by up to ``max_shift`` pixels, zero padded.

    Every image gets its own integer shift ``(dy, dx)`` drawn uniformly from
    ``[-max_shift, max_shift]``. For TRAINING batches only; test images are never shifted.

    Args:
        images: ``(B, C, H, W)`` on any device.
        max_shift: largest shift in pixels (2).
        generator: optional CPU ``torch.Generator`` for reproducible shifts.

    Returns:
        ``(B, C, H, W)`` shifted copy.
    """
    if images.dim() != 4:
        raise ValueError(f"random_shift expects (B, C, H, W), got {tuple(images.shape)}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return images.clone()
    # Drawn on the CPU (the generator's device), so the range check above never syncs a GPU.
    shifts = torch.randint(-max_shift, max_shift + 1, (2, images.shape[0]), generator=generator)  # (2, B)
    return shift_images(images, shifts.T, max_shift)
