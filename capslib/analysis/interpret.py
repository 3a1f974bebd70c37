"""Looking inside a trained CapsNet: coupling maps, receptive fields, capsule dimensions, as tensors.

Pure tensor work for notebooks 06-07: every function returns tensors (or a dict of them) on the
CPU and draws nothing (:mod:`capslib.plots.coupling` and :mod:`capslib.plots.dimensions` draw
them). A function that runs the model runs it in eval mode without gradients and puts it back in the mode it was in.
:func:`coupling_maps` can also route with the agreement scaled (``agreement_scale`` of
:func:`capslib.dynamic_routing`): an exploration, not the paper's algorithm.

Shapes use the package vocabulary; ``T`` is the number of primary-capsule types and ``H', W'``
their grid (32 and 6x6 for MNIST), so ``N_in = T * H' * W'`` in the order of
:class:`capslib.PrimaryCaps`: capsule ``n = t * H' * W' + row * W' + col``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..routing import dynamic_routing
from ..utils import check_index, eval_mode
from .routing_stats import model_prediction_vectors

__all__ = [
    "PERTURBATIONS",
    "coupling_maps",
    "mean_coupling",
    "coupling_spread",
    "receptive_fields",
    "perturb_dimensions",
    "decode_pose",
    "dimension_effects",
]

PERTURBATIONS = torch.arange(-5, 6, dtype=torch.float32) * 0.05  # linspace would make the middle -3.7e-9 ("-0.00")
"""The paper's Figure 4 offsets: -0.25 to 0.25 in steps of 0.05 (11 values)."""


def _check_image(image: torch.Tensor) -> torch.Tensor:
    """Return ``image`` as a batch of one ``(1, C, H, W)``; accepts ``(C, H, W)`` or ``(1, C, H, W)``."""
    if image.dim() == 3:
        image = image.unsqueeze(0)  # (1, C, H, W)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image of shape (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    return image


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def coupling_maps(
    model: torch.nn.Module, image: torch.Tensor, iterations: int = 3, agreement_scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """Route one image with ``iterations`` routing iterations and keep every iteration's coupling.

    The model's own ``routing_iterations`` and training mode are restored afterwards.

    Args:
        model: a :class:`capslib.CapsNet` (or a model with ``primary_caps``, ``primary_grid`` and the
            same forward signature).
        image: ``(C, H, W)`` or ``(1, C, H, W)``.
        iterations: ``R``.
        agreement_scale: 1 (default) is the paper's routing, run by the model itself. Any other
            value routes the model's ``u_hat`` with :func:`capslib.dynamic_routing`'s ``agreement_scale``,
            which multiplies the agreement added to the logits by this factor: an exploration, NOT the
            paper's algorithm.

    Returns:
        A dict of tensors on the CPU:
        ``coupling`` ``(R, N_out, T, H', W')``: ``c_ij`` of each iteration on the primary grid;
        ``vote_lengths`` ``(N_out, T, H', W')``: ``|u_hat_{j|i}|``, how long each vote is;
        ``lengths`` ``(R, N_out)``: the digit-capsule lengths ``|v_j|`` after each iteration.
    """
    image = _check_image(image).to(_model_device(model))
    if agreement_scale == 1:
        old_iterations = model.routing_iterations
        model.routing_iterations = iterations  # raises ValueError for iterations < 1, before anything changed
        try:
            with eval_mode(model):
                out = model(image, return_trace=True)
        finally:
            model.routing_iterations = old_iterations
        trace, u_hat = out.trace, out.u_hat  # u_hat: (1, N_in, N_out, D_out)
    else:  # the exploration: same u_hat, the agreement scaled (raises ValueError for a bad factor)
        u_hat = model_prediction_vectors(model, image)  # (1, N_in, N_out, D_out)
        trace = dynamic_routing(u_hat, iterations, return_trace=True, agreement_scale=agreement_scale).trace
    num_types = model.primary_caps.num_types
    grid_h, grid_w = model.primary_grid
    c = torch.stack([step.c[0] for step in trace])  # (R, N_in, N_out)
    c = c.view(iterations, num_types, grid_h, grid_w, -1).permute(0, 4, 1, 2, 3)  # (R, N_out, T, H', W')
    votes = torch.linalg.vector_norm(u_hat[0], dim=-1)  # (N_in, N_out)
    votes = votes.view(num_types, grid_h, grid_w, -1).permute(3, 0, 1, 2)  # (N_out, T, H', W')
    lengths = torch.stack([torch.linalg.vector_norm(step.v[0], dim=-1) for step in trace])  # (R, N_out)
    return {"coupling": c.cpu(), "vote_lengths": votes.cpu(), "lengths": lengths.cpu()}


def mean_coupling(maps: dict[str, torch.Tensor], class_index: int, weighted: bool = True) -> torch.Tensor:
    """Coupling to class ``j`` per grid position, averaged over the ``T`` types, minus the uniform share.

    With ``weighted=True`` the mean over types is weighted by each vote's length ``|u_hat_{j|i}|``,
    so that capsules which send almost nothing do not dilute it. ``1 / N_out`` (what every capsule
    sends every class in the first iteration) is subtracted: above 0, position sends class ``j``
    more than an equal share; below 0, less.

    Args:
        maps: the output of :func:`coupling_maps`.
        class_index: ``j`` in ``[0, N_out)``.
        weighted: weight the mean over types by vote length.

    Returns:
        ``(R, H', W')``: one grid per routing iteration.
    """
    num_out = maps["coupling"].shape[1]
    class_index = check_index("class_index", class_index, num_out)
    c = maps["coupling"][:, class_index]  # (R, T, H', W')
    weights = maps["vote_lengths"][class_index] if weighted else torch.ones_like(c[0])  # (T, H', W')
    return (c * weights).sum(dim=1) / weights.sum(dim=0) - 1.0 / num_out  # (R, H', W')


def coupling_spread(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """How far each input capsule's coupling is from uniform, per iteration.

    Args:
        maps: the output of :func:`coupling_maps` (``coupling`` ``(R, N_out, T, H', W')``).

    Returns:
        A dict of CPU tensors, one value per iteration and input capsule ``i``:
        ``max_coupling`` ``(R, N_in)``: ``max_j c_ij`` (``1 / N_out`` when uniform, 1 when the
        capsule sends everything to one class);
        ``entropy`` ``(R, N_in)``: ``-sum_j c_ij ln c_ij`` in nats (``ln N_out`` when uniform,
        0 when committed to one class).
    """
    c = maps["coupling"].flatten(start_dim=2)  # (R, N_out, N_in)
    entropy = -(c * c.clamp_min(1e-30).log()).sum(dim=1)  # (R, N_in)
    return {"max_coupling": c.amax(dim=1), "entropy": entropy}  # (R, N_in) each


def receptive_fields(grid_size: Sequence[int] = (6, 6), field: int = 17, stride: int = 2) -> torch.Tensor:
    """Pixel box each primary-capsule grid position sees: ``(H', W', 4)`` as ``(top, left, bottom, right)``.

    In CapsNet a primary capsule at ``(row, col)`` sees the 17x17 input pixels from
    ``(2 row, 2 col)`` to ``(2 row + 16, 2 col + 16)`` (Conv1 9x9 stride 1, then 9x9 stride 2), so
    neighbouring capsules overlap by 15 pixels and their centres are 2 pixels apart.
    """
    rows = torch.arange(grid_size[0]) * stride  # (H',)
    cols = torch.arange(grid_size[1]) * stride  # (W',)
    top, left = torch.meshgrid(rows, cols, indexing="ij")  # (H', W') each
    return torch.stack([top, left, top + field - 1, left + field - 1], dim=-1)  # (H', W', 4)


def decode_pose(model: torch.nn.Module, poses: torch.Tensor, class_index: int) -> torch.Tensor:
    """Reconstruct images from poses of digit capsule ``class_index`` alone (the others zero).

    Args:
        model: a CapsNet with a decoder (``model.decoder``, a :class:`capslib.Decoder`).
        poses: ``(D_out,)`` one pose or ``(B, D_out)`` several, all of class ``class_index``.
        class_index: ``j`` in ``[0, N_out)``, the decoder slot the poses go into.

    Returns:
        ``(B, C, H, W)`` reconstructions on the CPU (``B = 1`` for a single pose).
    """
    decoder = getattr(model, "decoder", None)
    if decoder is None:
        raise ValueError("decode_pose needs a model with a decoder (reconstruction=True)")
    class_index = check_index("class_index", class_index, decoder.out_capsules)
    if poses.dim() == 1:
        poses = poses.unsqueeze(0)  # (1, D_out)
    if poses.dim() != 2 or poses.shape[1] != decoder.out_dim:
        raise ValueError(
            f"poses must have shape ({decoder.out_dim},) or (B, {decoder.out_dim}), got {tuple(poses.shape)}"
        )
    device = _model_device(model)
    batch = poses.new_zeros(len(poses), decoder.out_capsules, decoder.out_dim)  # (B, N_out, D_out)
    batch[:, class_index] = poses  # (B, D_out)
    labels = torch.full((len(poses),), class_index, device=device)  # (B,)
    with eval_mode(model):
        return decoder(batch.to(device), labels).cpu()  # (B, C, H, W)


def perturb_dimensions(
    model: torch.nn.Module,
    image: torch.Tensor,
    class_index: int | None = None,
    values: torch.Tensor = PERTURBATIONS,
) -> dict[str, torch.Tensor]:
    """The paper's Figure 4: add each value to each dimension of one digit capsule and decode.

    Args:
        model: a CapsNet with a decoder, in any mode (run in eval mode, restored afterwards).
        image: ``(C, H, W)`` or ``(1, C, H, W)``.
        class_index: which digit capsule (None: the winning one).
        values: ``(V,)`` offsets (default :data:`PERTURBATIONS`, the paper's 11).

    Returns:
        A dict of CPU tensors: ``reconstructions`` ``(D_out, V, C, H, W)`` (row ``d``: dimension
        ``d`` perturbed by each value), ``pose`` ``(D_out,)`` the unperturbed capsule, ``values``
        ``(V,)`` and ``class_index`` (a 0-d tensor).
    """
    if getattr(model, "decoder", None) is None:
        raise ValueError("perturb_dimensions needs a model with a decoder (reconstruction=True)")
    image = _check_image(image).to(_model_device(model))
    with eval_mode(model):
        out = model(image)
    poses = out.poses  # (1, N_out, D_out)
    class_index = (
        int(out.predictions[0]) if class_index is None else check_index("class_index", class_index, poses.shape[1])
    )
    pose = poses[0, class_index]  # (D_out,)
    dims = pose.shape[-1]
    values = values.to(pose)  # (V,)
    # d: the dimension moved, v: the value added, e: the pose's dimensions (one-hot at d, times the value)
    offsets = torch.einsum("de,v->dve", torch.eye(dims).to(pose), values)  # (D_out, V, D_out)
    recon = decode_pose(model, (pose + offsets).reshape(-1, dims), class_index)  # (D_out * V, C, H, W)
    return {
        "reconstructions": recon.view(dims, len(values), *recon.shape[1:]),  # (D_out, V, C, H, W)
        "pose": pose.cpu(),
        "values": values.cpu(),
        "class_index": torch.tensor(class_index),
    }


def dimension_effects(
    model: torch.nn.Module, images: torch.Tensor, limit: float = 0.25, batch_size: int = 500
) -> torch.Tensor:
    """How much each dimension of the winning digit capsule moves its reconstruction (notebook 07).

    For every image, the winning capsule is decoded with dimension ``d`` at ``-limit`` and at
    ``+limit`` (the others as they are); the two reconstructions' absolute difference is averaged
    over the pixels and over the images. Large when a dimension changes many pixels a little or a
    few pixels a lot.

    Args:
        model: a capsule classifier with a decoder, in any mode (run in eval mode without gradients,
            restored afterwards).
        images: ``(B, C, H, W)`` images in [0, 1].
        limit: the offset (the paper's Figure 4 range is 0.25).
        batch_size: images decoded at a time; the result does not depend on it beyond float rounding.

    Returns:
        ``(D_out,)`` the mean |pixel change| of each dimension, on the CPU.
    """
    decoder = getattr(model, "decoder", None)
    if decoder is None:
        raise ValueError("dimension_effects needs a model with a decoder (reconstruction=True)")
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty batch (B, C, H, W), got {tuple(images.shape)}")
    if not limit > 0:
        raise ValueError(f"limit must be a positive offset, got {limit}")
    device = _model_device(model)
    total = torch.zeros(decoder.out_dim, dtype=torch.float64)  # (D_out,): summed over images and pixels
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            out = model(images[start : start + batch_size].to(device))
            winners = out.predictions  # (b,)
            rows = torch.arange(len(winners), device=device)  # (b,)
            for d in range(decoder.out_dim):
                low, high = out.poses.clone(), out.poses.clone()  # (b, N_out, D_out)
                low[rows, winners, d] -= limit
                high[rows, winners, d] += limit
                change = decoder(high, winners) - decoder(low, winners)  # (b, C, H, W)
                total[d] += change.abs().sum(dtype=torch.float64).cpu()
    pixels = images[0].numel()  # C * H * W
    return (total / (len(images) * pixels)).float()  # (D_out,)
