"""Affine transformations of digit images: rotation, shear, scale and translation, exact and seeded.

The paper's robustness test (Section 5.2) trains on MNIST and tests on affNIST, MNIST digits under
"random small affine transformations". affNIST itself is not installable here, so
:func:`capslib.data.affine_mnist` builds an affNIST-style test set from the 10,000 MNIST test
digits on the fly with :func:`random_affine_parameters` and :func:`affine_transform`.

The ranges, :data:`AFFNIST_RANGES`, are affNIST's as its page describes them (Tieleman,
https://www.cs.toronto.edu/~tijmen/affNIST/): rotation within 20 degrees either way, shear within
0.2 either way, horizontal and vertical scale each in [0.8, 1.2]; check them against the page
before quoting them. The translation differs: affNIST moves the digit anywhere in a 40x40 image;
at 28x28 we translate by up to 2 px per axis, so that a digit's 20x20 box scaled by 1.2 (24 px)
still fits the frame.
Pixels moved outside the frame are lost; uncovered ones are 0.

Conventions (screen coordinates: x to the right, y DOWN, about the image centre): a positive
rotation turns the digit counter-clockwise as displayed; a positive shear ``k`` moves each row to
the right by ``k`` times its height above the centre (``x' = x - k y``: the top leans right, as
italics); scale ``(sx, sy)`` stretches about the centre; translation ``(tx, ty)`` moves right and
down, in pixels. The forward map is ``p' = R Sh S p + t``; resampling is bilinear
(``torch.nn.functional.grid_sample``, ``align_corners=False``), so integer translations and
the identity are exact to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["AffineRanges", "AFFNIST_RANGES", "AffineParameters", "random_affine_parameters", "affine_transform"]


@dataclass(frozen=True)
class AffineRanges:
    """Bounds of a random affine transformation; each value is drawn uniformly in its range.

    Attributes:
        rotation: largest rotation in degrees, either way (<= 180).
        shear: largest shear factor, either way (< 1).
        scale: ``(low, high)`` of each axis' scale factor, ``0 < low <= high <= 3``.
        translation: largest translation in pixels per axis, either way.
    """

    rotation: float = 20.0
    shear: float = 0.2
    scale: tuple[float, float] = (0.8, 1.2)
    translation: float = 2.0

    def __post_init__(self):
        low, high = self.scale
        checks = [
            (0 <= self.rotation <= 180, f"rotation must lie in [0, 180] degrees, got {self.rotation}"),
            (0 <= self.shear < 1, f"shear must lie in [0, 1), got {self.shear}"),
            (0 < low <= high <= 3, f"scale must be (low, high) with 0 < low <= high <= 3, got {self.scale}"),
            (0 <= self.translation <= 14, f"translation must lie in [0, 14] pixels, got {self.translation}"),
        ]
        for ok, message in checks:
            if not (ok and all(math.isfinite(v) for v in (self.rotation, self.shear, low, high, self.translation))):
                raise ValueError(message if not ok else f"affine ranges must be finite, got {self}")


AFFNIST_RANGES = AffineRanges()
"""affNIST's rotation, shear and scale ranges, with a translation that fits 28x28 (module docstring)."""


@dataclass
class AffineParameters:
    """One transformation per image, each a ``(B,)`` float tensor."""

    rotation: torch.Tensor  # degrees, counter-clockwise as displayed
    shear: torch.Tensor  # x' = x - shear * y (y down): positive leans the top to the right
    scale_x: torch.Tensor
    scale_y: torch.Tensor
    translate_x: torch.Tensor  # pixels to the right
    translate_y: torch.Tensor  # pixels down

    def __len__(self) -> int:
        return self.rotation.shape[0]

    @classmethod
    def identity(cls, batch: int, **values: float) -> AffineParameters:
        """``batch`` copies of one transformation; unnamed parts are the identity's."""
        defaults = dict(rotation=0.0, shear=0.0, scale_x=1.0, scale_y=1.0, translate_x=0.0, translate_y=0.0)
        unknown = set(values) - set(defaults)
        if unknown:
            raise ValueError(f"unknown transformation parts {sorted(unknown)}; expected some of {sorted(defaults)}")
        return cls(**{name: torch.full((batch,), float(values.get(name, v))) for name, v in defaults.items()})


def random_affine_parameters(
    count: int, ranges: AffineRanges = AFFNIST_RANGES, generator: torch.Generator | None = None
) -> AffineParameters:
    """``count`` transformations drawn uniformly within ``ranges`` (on the CPU, from ``generator``)."""
    if not isinstance(ranges, AffineRanges):
        raise ValueError(f"ranges must be an AffineRanges, got {type(ranges).__name__}")

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)

    low, high = ranges.scale
    return AffineParameters(
        rotation=uniform(-ranges.rotation, ranges.rotation),
        shear=uniform(-ranges.shear, ranges.shear),
        scale_x=uniform(low, high),
        scale_y=uniform(low, high),
        translate_x=uniform(-ranges.translation, ranges.translation),
        translate_y=uniform(-ranges.translation, ranges.translation),
    )


def _forward_matrices(params: AffineParameters) -> torch.Tensor:
    """``(B, 2, 2)`` matrices ``R Sh S`` in pixel units (x right, y down), float64."""
    angle = torch.deg2rad(params.rotation.double())  # (B,)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    # Counter-clockwise on screen (y down): (x, y) -> (x cos + y sin, -x sin + y cos).
    rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (B, 2, 2)
    shear = torch.stack([torch.stack([one, -params.shear.double()], -1), torch.stack([zero, one], -1)], -2)
    scale = torch.diag_embed(torch.stack([params.scale_x.double(), params.scale_y.double()], -1))  # (B, 2, 2)
    return rotation @ shear @ scale  # (B, 2, 2)


def affine_transform(images: torch.Tensor, params: AffineParameters) -> torch.Tensor:
    """Apply one affine transformation per image (about the image centre, bilinear, zero fill).

    Args:
        images: ``(B, C, H, W)`` floating point in [0, 1].
        params: :class:`AffineParameters` of length ``B``.

    Returns:
        ``(B, C, H, W)`` transformed images, clamped to [0, 1] (bilinear rounding), on ``images``' device.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a floating-point (B, C, H, W) tensor, got {shape}")
    if len(params) != images.shape[0]:
        raise ValueError(f"got {len(params)} transformations for {images.shape[0]} images; expected one per image")
    height, width = images.shape[-2:]
    forward = _forward_matrices(params)  # (B, 2, 2): p' = A p + t, pixels
    shift = torch.stack([params.translate_x.double(), params.translate_y.double()], -1)  # (B, 2)
    # grid_sample asks, for each OUTPUT pixel, where to read the input: p = A^-1 (p' - t). It works
    # in coordinates normalised to [-1, 1] per axis: n = N p with N = diag(2 / W, 2 / H).
    to_norm = torch.diag(torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64))  # (2, 2)
    inverse = torch.linalg.inv(forward)  # (B, 2, 2)
    linear = to_norm @ inverse @ torch.linalg.inv(to_norm)  # (B, 2, 2)
    offset = -(linear @ (to_norm @ shift.unsqueeze(-1)))  # (B, 2, 1)
    theta = torch.cat([linear, offset], dim=-1).to(images)  # (B, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    out = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)
