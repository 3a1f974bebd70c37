"""Invariance and equivariance, measured: move a digit and see which features move with it.

Pure tensor work for notebook 00 (nothing is drawn here; :mod:`capslib.plots.equivariance` draws). A
function that runs the model runs it in eval mode without gradients and puts it back in the
mode it was in; every returned tensor is on the CPU.

Two transformations, both exact where they can be:

* a **shift** by whole pixels moves every pixel, zero filled; nothing wraps round, so pixels
  pushed over the border are lost (:func:`shift_image`);
* a **rotation** about the image centre, positive = counter-clockwise as displayed (row 0 at
  the top), resampled bilinearly with zero fill (:func:`rotate_image`); a rotation by 0 returns
  an exact copy, and 90-degree steps land on the pixel grid.

What :func:`measure_equivariance` compares, for each transformed digit ``x'`` against the
untransformed ``x``, with the relative change ``||f(x') - f(x)|| / ||f(x)||`` (Euclidean norms):

* the **pooled CNN feature**: Conv1's 256 ReLU maps ``(B, 256, 20, 20)``, each max-pooled over
  all its positions, ``(B, 256)``. Conv1 is the model's convolution with a ReLU, the layer a
  plain CNN would pool: "is feature ``k`` present anywhere?", which is the summary max-pooling
  keeps. The primary convolution's output ``(B, 256, 6, 6)`` pooled the same way (same depth
  as the capsules, the very numbers they are cut from) is returned beside it;
* the **pose** of the winning digit capsule ``v_k`` ``(B, 16)``, where ``k`` is the class the
  model predicts for the UNtransformed digit and stays fixed for all amounts, so that one and
  the same capsule is followed (if the prediction flips, the winner's pose is not compared with
  another class's).

Shapes use the package vocabulary; ``A`` is the number of amounts (shifts or angles).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..data.affine import AffineParameters, affine_transform
from ..data.shift import shift_images
from ..utils import eval_mode

__all__ = [
    "KINDS",
    "MAX_ROTATION",
    "shift_image",
    "rotate_image",
    "transform_digit",
    "relative_change",
    "centre_of_mass",
    "orientation",
    "angle_difference",
    "pooled_features",
    "measure_equivariance",
]

KINDS = ("shift", "rotate")
"""What :func:`measure_equivariance` can do to a digit: a horizontal shift (px) or a rotation (degrees)."""

MAX_ROTATION = 180.0
"""Largest rotation accepted, in degrees either way."""


def _as_batch(images: torch.Tensor, name: str = "images") -> tuple[torch.Tensor, bool]:
    """``(C, H, W)`` or ``(B, C, H, W)`` -> ``(B, C, H, W)`` and whether a batch axis was added."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (B, C, H, W), got {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point in [0, 1], got dtype {images.dtype}")
    if images.dim() == 3:
        return images.unsqueeze(0), True  # (1, C, H, W)
    return images, False


def _whole_pixels(name: str, value, limit: int) -> int:
    """``value`` as an int if it is a whole number of pixels in ``[-limit, limit]``, else ValueError."""
    if isinstance(value, bool) or float(value) != int(value):
        raise ValueError(f"{name} must be a whole number of pixels, got {value!r}")
    if abs(int(value)) > limit:
        raise ValueError(f"{name} must lie in [-{limit}, {limit}] pixels for this image, got {value}")
    return int(value)


def shift_image(images: torch.Tensor, dx: int = 0, dy: int = 0) -> torch.Tensor:
    """Shift by whole pixels, ``dx`` to the right and ``dy`` down, zero filled, without wrapping
    (:func:`capslib.data.shift.shift_images`, the training augmentation's shift, with one shift for all).

    Every pixel value is copied unchanged (no interpolation); the ones pushed over the border
    are lost, the ones uncovered are 0.

    Args:
        images: ``(C, H, W)`` or ``(B, C, H, W)``.
        dx, dy: whole pixels, ``|dx| <= W``, ``|dy| <= H`` (negative: left, up).

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    batch, added = _as_batch(images)
    height, width = batch.shape[-2:]
    dx = _whole_pixels("dx", dx, width)
    dy = _whole_pixels("dy", dy, height)
    shifts = torch.tensor([[dy, dx]]).expand(batch.shape[0], 2)  # (B, 2): (down, right)
    moved = shift_images(batch, shifts, max(abs(dx), abs(dy)))  # (B, C, H, W)
    # In the input's memory layout: the gather leaves one channel strided as channels-last, on
    # which a convolution rounds differently, and a shift by 0 must change no feature at all.
    out = torch.empty_like(batch).copy_(moved)  # (B, C, H, W)
    return out[0] if added else out


def rotate_image(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate about the image centre by ``degrees``, counter-clockwise as displayed (row 0 on top).

    :func:`capslib.data.affine.affine_transform` with a rotation only: bilinear resampling, zero
    fill outside the image, the centre in the middle of the pixel grid, ``((W-1)/2, (H-1)/2)`` in
    pixel indices (as in ``torchvision.transforms.functional.rotate``), clamped to [0, 1] against
    float rounding. ``degrees == 0`` returns an exact copy.

    Args:
        images: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1].
        degrees: in ``[-180, 180]``.

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    batch, added = _as_batch(images)
    degrees = float(degrees)
    if not math.isfinite(degrees) or abs(degrees) > MAX_ROTATION:
        raise ValueError(f"degrees must be a finite angle in [-{MAX_ROTATION:g}, {MAX_ROTATION:g}], got {degrees}")
    if degrees == 0.0:  # exact, where resampling would round
        out = batch.clone()
    else:
        out = affine_transform(batch, AffineParameters.identity(batch.shape[0], rotation=degrees))  # (B, C, H, W)
    return out[0] if added else out


def transform_digit(images: torch.Tensor, shift: Sequence[int] = (0, 0), rotation: float = 0.0) -> torch.Tensor:
    """Rotate (about the centre) then shift a digit or a batch of digits.

    Args:
        images: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1].
        shift: ``(dx, dy)`` whole pixels, right and down (see :func:`shift_image`).
        rotation: degrees counter-clockwise as displayed, in ``[-180, 180]`` (see :func:`rotate_image`).

    Returns:
        The transformed images, same shape as ``images``.
    """
    if isinstance(shift, int | float) or len(shift) != 2:
        raise ValueError(f"shift must be a pair (dx, dy) of whole pixels, got {shift!r}")
    return shift_image(rotate_image(images, rotation), dx=shift[0], dy=shift[1])


def relative_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``||new - old|| / ||old||`` over the last axis (Euclidean norms): ``(..., F)`` -> ``(...)``.

    0 means unchanged; 1 means the change is as long as the vector itself. ``old`` may have fewer
    leading axes (``(A, B, F)`` against ``(B, F)``: every step against one reference), as long as
    the shapes broadcast. An ``old`` of length 0 is treated as length 1e-12 (huge, not NaN).
    """
    try:
        torch.broadcast_shapes(new.shape, old.shape)
    except RuntimeError:
        raise ValueError(
            f"new and old must broadcast, with the same last axis, got {tuple(new.shape)} and {tuple(old.shape)}"
        ) from None
    if new.shape[-1:] != old.shape[-1:]:
        raise ValueError(f"new and old must have the same last axis, got {tuple(new.shape)} and {tuple(old.shape)}")
    difference = torch.linalg.vector_norm(new - old, dim=-1)  # (...)
    return difference / torch.linalg.vector_norm(old, dim=-1).clamp_min(1e-12)  # (...)


def _moments(images: torch.Tensor):
    """Mass ``(B,)`` and the pixel-index grids ``(H, W)`` of a ``(B, C, H, W)`` batch summed over C."""
    batch, _ = _as_batch(images)
    plane = batch.sum(dim=1)  # (B, H, W)
    height, width = plane.shape[-2:]
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=plane.dtype, device=plane.device),
        torch.arange(width, dtype=plane.dtype, device=plane.device),
        indexing="ij",
    )  # (H, W) each
    return plane, plane.sum(dim=(1, 2)).clamp_min(1e-12), rows, cols


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre ``(x, y)`` in pixels (x = column, y = row): ``(B, C, H, W)`` -> ``(B, 2)``.

    A ``(C, H, W)`` image gives ``(1, 2)``. An empty image (all zeros) gives ``(0, 0)``.
    """
    plane, mass, rows, cols = _moments(images)
    x = (plane * cols).sum(dim=(1, 2)) / mass  # (B,)
    y = (plane * rows).sum(dim=(1, 2)) / mass  # (B,)
    return torch.stack([x, y], dim=1)  # (B, 2)


def orientation(images: torch.Tensor) -> torch.Tensor:
    """Angle of the principal axis of the intensity (second moments), in degrees in (-90, 90].

    Measured counter-clockwise as displayed from the x axis (rightwards), so that
    ``orientation(rotate_image(x, a)) - orientation(x)`` is about ``a`` (up to 180-degree wrap,
    see :func:`angle_difference`). Meaningful for elongated shapes (a 1, a 7); for a round one (a
    0) the axis is ill-defined and jumps.

    Returns:
        ``(B,)`` degrees (``(1,)`` for a single ``(C, H, W)`` image).
    """
    plane, mass, rows, cols = _moments(images)
    centre = centre_of_mass(images)  # (B, 2)
    dx = cols - centre[:, 0].view(-1, 1, 1)  # (B, H, W)
    dy = -(rows - centre[:, 1].view(-1, 1, 1))  # (B, H, W): upwards positive, as displayed
    mu20 = (plane * dx * dx).sum(dim=(1, 2)) / mass  # (B,)
    mu02 = (plane * dy * dy).sum(dim=(1, 2)) / mass  # (B,)
    mu11 = (plane * dx * dy).sum(dim=(1, 2)) / mass  # (B,)
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))  # (B,)


def angle_difference(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new - old`` for axis angles (degrees, defined modulo 180), wrapped into [-90, 90)."""
    return torch.remainder(new - old + 90.0, 180.0) - 90.0


def _forward_pooled(model: torch.nn.Module, images: torch.Tensor):
    """One eval-mode forward pass of ``(B, C, H, W)`` that also max-pools the two convolutions.

    Forward hooks take the maxima while the model runs, so nothing is computed twice. Conv1's
    hook sees the output before the model's in-place ReLU; ReLU is monotone, so
    ``relu(max(z)) == max(relu(z))`` exactly.
    """
    pooled: dict[str, torch.Tensor] = {}

    def keep(name: str, relu: bool):
        def hook(module, inputs, output):
            top = output.amax(dim=(2, 3))  # (B, channels): the largest value of each map
            pooled[name] = torch.relu(top) if relu else top

        return hook

    hooks = [
        model.conv1.register_forward_hook(keep("conv1", relu=True)),
        model.primary_caps.inner.register_forward_hook(keep("primary", relu=False)),
    ]
    try:
        with eval_mode(model):
            out = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return out, pooled


def pooled_features(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's convolutional features, each channel max-pooled over all positions.

    Args:
        model: a :class:`capslib.CapsNet` (``conv1``, ``primary_caps.inner``), any mode (run in
            eval mode, restored afterwards).
        images: ``(B, C, H, W)`` on the model's device.

    Returns:
        ``conv1``: ``(B, 256)`` max over the 20x20 positions of ReLU(Conv1);
        ``primary``: ``(B, T*D_in)`` max over the 6x6 grid of the primary convolution (before squash).
    """
    return _forward_pooled(model, images)[1]


def _check_amounts(kind: str, amounts, image_shape: Sequence[int]) -> torch.Tensor:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    values = torch.as_tensor(amounts, dtype=torch.float64).flatten()  # (A,)
    if values.numel() == 0:
        raise ValueError("amounts must hold at least one shift or angle, got none")
    if not torch.isfinite(values).all():
        raise ValueError(f"amounts must be finite numbers, got {values.tolist()}")
    if kind == "shift":
        limit = image_shape[-1] // 2  # beyond half the width, most of a centred digit has left the image
        if not torch.equal(values, values.round()):
            raise ValueError(f"shift amounts must be whole pixels, got {values.tolist()}")
        if values.abs().max() > limit:
            raise ValueError(
                f"shift amounts must lie in [-{limit}, {limit}] pixels (half the image width), got {values.tolist()}"
            )
    elif values.abs().max() > MAX_ROTATION:
        raise ValueError(f"rotation amounts must lie in [-180, 180] degrees, got {values.tolist()}")
    return values.float()


def measure_equivariance(
    model: torch.nn.Module,
    images: torch.Tensor,
    kind: str = "shift",
    amounts: Sequence[float] = tuple(range(-6, 7)),
    batch_size: int = 100,
) -> dict[str, torch.Tensor]:
    """Transform digits step by step; follow the pooled CNN features and the winning capsule.

    Each digit is shifted to the right by ``amounts`` pixels (``kind="shift"``; negative: left)
    or rotated counter-clockwise by ``amounts`` degrees (``kind="rotate"``), and the model is run
    on every transformed copy. The winning capsule is the one of the class predicted for the
    untransformed digit (kept fixed, so one capsule is followed); its pose is decoded alone by
    ``model.decoder`` (as :func:`capslib.interpret.decode_pose` does), so the reconstruction shows
    what the pose says about where and how the digit lies.

    Args:
        model: a :class:`capslib.CapsNet` with a decoder.
        images: ``(C, H, W)`` one digit or ``(B, C, H, W)`` several, in [0, 1], of the model's size.
        kind: ``"shift"`` (whole pixels, within half the image width) or ``"rotate"`` (degrees in
            [-180, 180]).
        amounts: ``A`` shifts or angles (0 may be among them; the reference is computed anyway).
        batch_size: images per forward pass (memory only; the numbers do not depend on it).

    Returns:
        A dict of CPU tensors:

        * ``kind`` (the string), ``amounts`` ``(A,)``; ``classes`` ``(B,)`` the winning class of
          each untransformed digit;
        * ``images`` ``(A, B, C, H, W)`` the transformed digits, ``original`` ``(B, C, H, W)``;
        * ``predictions`` ``(A, B)`` the class predicted for each transformed digit;
        * ``pooled`` ``(A, B, 256)`` and ``pooled_primary`` ``(A, B, T*D_in)``: the pooled CNN
          features (see the module docstring), ``pooled_reference`` ``(B, 256)`` and
          ``pooled_primary_reference`` ``(B, T*D_in)`` of the untransformed digits;
        * ``poses`` ``(A, B, D_out)`` the winning capsule ``v_k``, ``pose_reference`` ``(B, D_out)``;
        * ``lengths`` ``(A, B)`` its length ``|v_k|`` (its activity), ``length_reference`` ``(B,)``;
        * ``change_pooled``, ``change_pooled_primary``, ``change_pose``, ``change_length``,
          ``change_image`` ``(A, B)``: relative changes ``||f(x') - f(x)|| / ||f(x)||``
          (:func:`relative_change`; for the length ``| |v_k'| - |v_k| | / |v_k|``), the last of
          the pixels themselves, for scale;
        * ``reconstructions`` ``(A, B, C, H, W)`` decoded from ``v_k`` alone,
          ``reconstruction_reference`` ``(B, C, H, W)``;
        * ``input_motion`` and ``reconstruction_motion`` ``(A, B)``: how far the digit and its
          reconstruction moved, against the untransformed ones: for a shift the horizontal
          centre of mass (pixels, :func:`centre_of_mass`), for a rotation the principal axis
          (degrees, :func:`orientation`).

    Raises:
        ValueError: for an unknown ``kind``, images of the wrong shape, amounts that are empty,
            not whole pixels (shift) or out of range, or a model without a decoder.
    """
    decoder = getattr(model, "decoder", None)
    if decoder is None:
        raise ValueError("measure_equivariance needs a model with a decoder (reconstruction=True)")
    images, _ = _as_batch(images)
    image_shape = tuple(model.image_shape)
    if tuple(images.shape[1:]) != image_shape:
        raise ValueError(
            f"images must have shape (B, {', '.join(map(str, image_shape))}) or "
            f"({', '.join(map(str, image_shape))}) for this model, got {tuple(images.shape)}"
        )
    values = _check_amounts(kind, amounts, image_shape)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device

    def transform(batch: torch.Tensor, amount: float) -> torch.Tensor:
        return shift_image(batch, dx=int(amount)) if kind == "shift" else rotate_image(batch, amount)

    def run(batch: torch.Tensor, classes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Pooled features, winner's pose, prediction and reconstruction of ``(b, C, H, W)``."""
        batch = batch.to(device)
        out, pooled = _forward_pooled(model, batch)
        with eval_mode(model):
            winners = out.predictions if classes is None else classes.to(device)  # (b,)
            rows = torch.arange(len(batch), device=device)  # (b,)
            pose = out.poses[rows, winners]  # (b, D_out)
            masked = torch.zeros_like(out.poses)  # (b, N_out, D_out): only the winner kept
            masked[rows, winners] = pose
            recon = decoder(masked, winners)  # (b, C, H, W)
        return {
            "pooled": pooled["conv1"].cpu(),
            "pooled_primary": pooled["primary"].cpu(),
            "pose": pose.cpu(),
            "prediction": out.predictions.cpu(),
            "classes": winners.cpu(),
            "reconstruction": recon.cpu(),
        }

    def run_all(batch: torch.Tensor, classes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        parts = [
            run(batch[start : start + batch_size], None if classes is None else classes[start : start + batch_size])
            for start in range(0, len(batch), batch_size)
        ]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    reference = run_all(images, None)
    classes = reference["classes"]  # (B,)
    steps = []
    transformed_all = []
    for amount in values.tolist():
        transformed = transform(images, amount)  # (B, C, H, W)
        transformed_all.append(transformed.cpu())
        steps.append(run_all(transformed, classes))

    def stacked(key: str) -> torch.Tensor:
        return torch.stack([step[key] for step in steps])  # (A, B, ...)

    transformed = torch.stack(transformed_all)  # (A, B, C, H, W)
    pooled, pooled_primary, poses = stacked("pooled"), stacked("pooled_primary"), stacked("pose")
    recon = stacked("reconstruction")  # (A, B, C, H, W)
    original = images.cpu()
    lengths = torch.linalg.vector_norm(poses, dim=-1)  # (A, B)
    reference_length = torch.linalg.vector_norm(reference["pose"], dim=-1)  # (B,)
    if kind == "shift":
        input_motion = centre_of_mass(transformed.flatten(0, 1))[:, 0].view(len(values), -1)  # (A, B)
        input_motion = input_motion - centre_of_mass(original)[:, 0]
        recon_motion = centre_of_mass(recon.flatten(0, 1))[:, 0].view(len(values), -1)  # (A, B)
        recon_motion = recon_motion - centre_of_mass(reference["reconstruction"])[:, 0]
    else:
        angles = orientation(transformed.flatten(0, 1)).view(len(values), -1)  # (A, B)
        input_motion = angle_difference(angles, orientation(original))
        angles = orientation(recon.flatten(0, 1)).view(len(values), -1)  # (A, B)
        recon_motion = angle_difference(angles, orientation(reference["reconstruction"]))
    return {
        "kind": kind,
        "amounts": values,
        "classes": classes,
        "images": transformed,
        "original": original,
        "predictions": stacked("prediction"),
        "pooled": pooled,
        "pooled_reference": reference["pooled"],
        "pooled_primary": pooled_primary,
        "pooled_primary_reference": reference["pooled_primary"],
        "poses": poses,
        "pose_reference": reference["pose"],
        "lengths": lengths,
        "length_reference": reference_length,
        "change_pooled": relative_change(pooled, reference["pooled"]),  # (A, B)
        "change_pooled_primary": relative_change(pooled_primary, reference["pooled_primary"]),  # (A, B)
        "change_pose": relative_change(poses, reference["pose"]),  # (A, B)
        "change_length": relative_change(lengths.unsqueeze(-1), reference_length.unsqueeze(-1)),  # (A, B)
        "change_image": relative_change(transformed.flatten(2), original.flatten(1)),  # (A, B)
        "reconstructions": recon,
        "reconstruction_reference": reference["reconstruction"],
        "input_motion": input_motion,
        "reconstruction_motion": recon_motion,
    }
