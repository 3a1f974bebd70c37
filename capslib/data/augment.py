"""Training augmentations: the paper's shifts, and Efficient-CapsNet's rotation, squish and erase.

``AUGMENTATIONS`` names what ``python -m capslib.train --augment`` accepts:

- ``"shift"``: Sabour et al. Section 4, every image shifted by up to ``max_shift`` whole pixels.
- ``"efficient"``: the pipeline of Mazzia et al. 2021's released code (``utils/pre_process_mnist.py``),
  in its order: a rotation for half the images, the shift, a horizontal squish, a 4x4 erased patch.
  Where we differ: the shift is ours (uniform, up to ``max_shift`` pixels; theirs is a fraction of
  the digit's margin), and resampling is bilinear (theirs: OpenCV's rotation, a Lanczos resize).

Every draw comes from the CPU ``generator`` a run seeds per epoch, so a resumed run replays the
same images. For TRAINING batches only: test images are never augmented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .shift import random_shift

__all__ = ["AUGMENTATIONS", "augment", "random_rotation", "random_squish", "random_erase"]

AUGMENTATIONS = ("shift", "efficient")

# The released code draws its amounts as N(0, 0.33) clipped to (-0.9999, 0.9999): mostly small ones.
SPREAD, CLIP = 0.33, 0.9999


def augment(images: torch.Tensor, name: str, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` in [0, 1], augmented by the pipeline ``name`` (one of :data:`AUGMENTATIONS`)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {name!r}")
    if name == "efficient":
        images = random_rotation(images, generator=generator)
    if max_shift:
        images = random_shift(images, max_shift, generator=generator)
    if name == "efficient":
        images = random_erase(random_squish(images, generator=generator), generator=generator)
    return images


def _clipped_normal(count: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` amounts drawn as the released code draws them: N(0, 0.33) clipped to +-0.9999."""
    return (torch.randn(count, generator=generator) * SPREAD).clamp(-CLIP, CLIP)  # (count,)


def _check(images: torch.Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, C, H, W), got {tuple(images.shape)} {images.dtype}")


def _resample(images: torch.Tensor, source_x: torch.Tensor, source_y: torch.Tensor) -> torch.Tensor:
    """Each output pixel ``(b, :, i, j)`` read bilinearly at pixel position ``(source_y, source_x)[b, i, j]``
    of ``images[b]`` (pixel centres at whole numbers; outside the image reads 0)."""
    _, _, height, width = images.shape
    # grid_sample wants [-1, 1] with align_corners=False: pixel k's centre sits at (2k + 1) / size - 1.
    grid = torch.stack([(2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(images, grid.to(images.device, images.dtype), mode="bilinear", align_corners=False)


def _pixel_grid(batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output pixel positions ``(x, y)``, each ``(B, H, W)``."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    return x.expand(batch, height, width), y.expand(batch, height, width)


def random_rotation(
    images: torch.Tensor, max_degrees: float = 30.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Half the images (drawn) rotated about their centre by ``max_degrees`` times a clipped N(0, 0.33).

    ``(B, C, H, W)`` -> ``(B, C, H, W)``; the other half come back unchanged."""
    _check(images)
    batch, _, height, width = images.shape
    angles = torch.deg2rad(_clipped_normal(batch, generator) * max_degrees)  # (B,)
    rotate = _clipped_normal(batch, generator) <= 0  # (B,) the released code's coin: a second amount's sign
    angles = torch.where(rotate, angles, torch.zeros_like(angles)).view(batch, 1, 1)
    x, y = _pixel_grid(batch, height, width)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    # Each output pixel reads the input where the inverse rotation takes it.
    cos, sin = torch.cos(angles), torch.sin(angles)
    source_x = cos * (x - cx) + sin * (y - cy) + cx
    source_y = -sin * (x - cx) + cos * (y - cy) + cy
    return _resample(images, source_x, source_y)


def random_squish(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image squeezed horizontally by 1 to W/4 columns (mostly 1-3) and set 0-1 columns right of centre.

    ``(B, C, H, W)`` -> ``(B, C, H, W)``; as the released code: resize to width ``W - w``, pad
    ``w // 2 + o`` columns on the left, crop to ``W``."""
    _check(images)
    batch, _, height, width = images.shape
    squeeze = torch.floor(_clipped_normal(batch, generator).abs() * (width / 4) + 1)  # (B,) columns lost, w
    nudge = torch.floor(_clipped_normal(batch, generator).abs() * 2)  # (B,) 0 or 1, o
    offset = (torch.div(squeeze, 2, rounding_mode="floor") + nudge).view(batch, 1, 1)
    scale = (width / (width - squeeze)).view(batch, 1, 1)  # input columns per output column
    x, y = _pixel_grid(batch, height, width)
    source_x = (x - offset + 0.5) * scale - 0.5  # output column x came from this input position
    return _resample(images, source_x, y)


def random_erase(images: torch.Tensor, size: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image with one ``size`` x ``size`` patch set to 0, its corner drawn in rows and columns 4-22 (28 px).

    ``(B, C, H, W)`` -> ``(B, C, H, W)``, a copy."""
    _check(images)
    batch, _, height, width = images.shape
    margin = 4  # the released code keeps the corner in [4, 22] on 28x28: 19 places each way
    rows = torch.randint(margin, height - margin - 1, (batch,), generator=generator)  # (B,) 4..22
    cols = torch.randint(margin, width - margin - 1, (batch,), generator=generator)  # (B,)
    keep = torch.ones(batch, 1, height, width)
    r = torch.arange(height).view(1, height, 1)
    c = torch.arange(width).view(1, 1, width)
    inside = (r >= rows.view(-1, 1, 1)) & (r < rows.view(-1, 1, 1) + size)
    inside = inside & (c >= cols.view(-1, 1, 1)) & (c < cols.view(-1, 1, 1) + size)  # (B, H, W)
    keep[inside.unsqueeze(1)] = 0
    return images * keep.to(images.device, images.dtype)
