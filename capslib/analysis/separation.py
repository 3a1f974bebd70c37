"""MultiMNIST separation measures: does routing send each of two overlapping digits' capsules to that digit?

Tensor work for notebook 10 and :mod:`capslib.experiments.multimnist_study`: which digit each
primary capsule sees (:func:`field_ownership`), where the capsules send their output
(:func:`coupling_difference`, :func:`pair_coupling`), how strongly routing separates the two digits
(:func:`separation_of_pairs`), and what the paper's Figure 5 draws (:func:`predicted_pairs`,
:func:`reconstruct_predicted`); :mod:`capslib.plots.multimnist` draws them.

Shapes use the package vocabulary; ``T`` primary-capsule types on a ``H' x W'`` grid (32 on 10x10
for 36x36 pairs: ``N_in = 3200``), ``A``/``B`` the first and second digit of a pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..routing import check_iterations, dynamic_routing
from ..utils import eval_mode
from .routing_stats import model_prediction_vectors

__all__ = [
    "OWN_SHARE",
    "FIELD",
    "STRIDE",
    "field_weights",
    "field_ownership",
    "coupling_difference",
    "pair_coupling",
    "predicted_pairs",
    "reconstruct_predicted",
    "separation_of_pairs",
]

OWN_SHARE = 0.75
"""A primary-grid position belongs to a digit when at least this share of the ink in its receptive
field is that digit's (the rest, where the two digits mix, is left out of the separation)."""
FIELD, STRIDE = 17, 2  # a primary capsule sees 17x17 pixels, its neighbours' fields start 2 px on


def field_weights(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(1, 1, 17, 17)`` how many paths lead from each pixel of a primary capsule's field to it,
    normalised to sum 1: Conv1 (9x9) then the primary convolution (9x9) reach a pixel ``p`` pixels
    into the field in ``9 - |p - 8|`` ways per axis, so the field is a pyramid peaked at its centre."""
    ramp = 9.0 - (torch.arange(FIELD, dtype=dtype) - FIELD // 2).abs()  # (17,): 1, 2, ..., 9, ..., 1
    pyramid = torch.outer(ramp, ramp)  # (17, 17)
    return (pyramid / pyramid.sum()).view(1, 1, FIELD, FIELD)


def field_ownership(first: torch.Tensor, second: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Which digit each primary-grid position sees: the first digit's share of the ink in its field.

    A primary capsule at ``(row, col)`` sees the 17x17 pixels from ``(2 row, 2 col)`` (Conv1 9x9
    stride 1, then 9x9 stride 2), the middle ones through more paths than the edges
    (:func:`field_weights`); each digit's ink is weighted so, a stride-2 convolution.

    Args:
        first, second: ``(B, 1, H, W)`` the two shifted digits of each pair (``Pairs.first``/``.second``).
        grid: ``(H', W')`` the model's ``primary_grid``.

    Returns:
        ``(B, H', W')`` in [0, 1]: 1 where only the first digit has ink in the field, 0 where only
        the second has, 0.5 where neither has any.
    """
    if first.shape != second.shape or first.dim() != 4 or first.shape[1] != 1:
        raise ValueError(
            f"first and second must both be (B, 1, H, W), got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    weights = field_weights().to(first.device)  # (1, 1, 17, 17)
    ink_a = F.conv2d(first.float(), weights, stride=STRIDE)[:, 0]  # (B, H', W')
    ink_b = F.conv2d(second.float(), weights, stride=STRIDE)[:, 0]  # (B, H', W')
    if tuple(ink_a.shape[1:]) != tuple(grid):
        raise ValueError(
            f"the images give a {tuple(ink_a.shape[1:])} grid of fields, expected the model's {tuple(grid)}"
        )
    total = ink_a + ink_b  # (B, H', W')
    return torch.where(total > 1e-6, ink_a / total.clamp_min(1e-6), torch.full_like(total, 0.5))


def coupling_difference(
    c: torch.Tensor, primary_lengths: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Per grid position, how much more the capsules there send to digit A's class than to B's.

    For each position the ``T`` capsule types are averaged, each weighted by its primary capsule's
    length ``|u_i|`` (how present the part is; the same weight for both classes, unlike a vote's
    length, so the difference is of like with like): ``sum_t |u_i| (c_iA - c_iB) / sum_t |u_i|``.

    Args:
        c: ``(B, N_in, N_out)`` coupling coefficients of one iteration.
        primary_lengths: ``(B, N_in)`` ``|u_i|``.
        labels: ``(B, 2)`` the classes of digit A and digit B.
        grid: ``(H', W')``.

    Returns:
        ``(B, H', W')`` in [-1, 1]: above 0 the position routes to A, below 0 to B, 0 when it
        splits evenly (every position at iteration 1, where ``c = 1/N_out``).
    """
    batch, num_in, _ = c.shape
    if primary_lengths.shape != (batch, num_in) or labels.shape != (batch, 2):
        raise ValueError(
            f"expected primary_lengths (B, N_in) = {(batch, num_in)} and labels (B, 2), "
            f"got {tuple(primary_lengths.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.to(c.device)
    to_a = c.gather(2, labels[:, None, :1].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
    to_b = c.gather(2, labels[:, None, 1:].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
    height, width = grid
    weights = primary_lengths.reshape(batch, -1, height, width)  # (B, T, H', W'): n = t H'W' + row W' + col
    difference = (to_a - to_b).reshape(batch, -1, height, width)  # (B, T, H', W')
    return (weights * difference).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)  # (B, H', W')


def pair_coupling(model: torch.nn.Module, image: torch.Tensor, labels: torch.Tensor, iterations: int = 3) -> dict:
    """Route one pair and keep, per iteration, where its primary capsules send their output.

    Args:
        model: a :class:`capslib.CapsNet` for 36x36 pairs.
        image: ``(1, H, W)`` or ``(1, 1, H, W)`` the pair.
        labels: ``(2,)`` the classes of digit A and digit B (the true labels, or any two classes).
        iterations: ``R``.

    Returns:
        A dict of CPU tensors: ``difference`` ``(R, H', W')`` (:func:`coupling_difference` of every
        iteration); ``lengths`` ``(R, N_out)`` ``|v_j|`` after each iteration; ``presence``
        ``(H', W')`` the mean primary-capsule length at each position.
    """
    iterations = check_iterations(iterations)
    image = image.reshape(1, *image.shape[-3:])  # (1, C, H, W)
    labels = torch.as_tensor(labels).reshape(1, 2)  # (1, 2)
    u, u_hat = model_prediction_vectors(model, image, return_primary=True)  # (1, N_in, D_in), (1, N_in, N_out, D_out)
    with torch.no_grad():
        trace = dynamic_routing(u_hat, iterations, return_trace=True).trace
    primary = torch.linalg.vector_norm(u, dim=-1)  # (1, N_in)
    grid = tuple(model.primary_grid)
    difference = torch.cat([coupling_difference(step.c, primary, labels, grid) for step in trace])  # (R, H', W')
    lengths = torch.stack([torch.linalg.vector_norm(step.v[0], dim=-1) for step in trace])  # (R, N_out)
    presence = primary.reshape(-1, *grid).mean(dim=0)  # (H', W')
    return {"difference": difference.cpu(), "lengths": lengths.cpu(), "presence": presence.cpu()}


def predicted_pairs(lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The two longest capsules of each pair, ordered to line up with the labels where they can.

    A predicted class equal to label A goes first, one equal to label B second; a wrong one takes
    the place left over (so a pair read as ``(7, 3)`` with labels ``(2, 7)`` becomes ``(3, 7)``).

    Args:
        lengths: ``(B, N_out)`` capsule lengths; labels: ``(B, 2)``.

    Returns:
        ``(B, 2)`` long.
    """
    if lengths.dim() != 2 or labels.shape != (lengths.shape[0], 2):
        raise ValueError(
            f"expected lengths (B, N_out) and labels (B, 2), got {tuple(lengths.shape)} and {tuple(labels.shape)}"
        )
    top = lengths.topk(2, dim=1).indices.cpu()  # (B, 2): longest first
    labels = labels.cpu()
    swap = (top[:, 0] == labels[:, 1]) | (top[:, 1] == labels[:, 0])  # (B,) a match sits in the wrong slot
    return torch.where(swap[:, None], top.flip(dims=(1,)), top)  # (B, 2)


def reconstruct_predicted(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """What the paper's Figure 5 draws: each pair reconstructed from its two longest capsules.

    Args:
        model: a :class:`capslib.CapsNet` with a decoder; images: ``(B, 1, H, W)``; labels: ``(B, 2)``.

    Returns:
        A dict of CPU tensors: ``lengths`` ``(B, N_out)``; ``predicted`` ``(B, 2)`` (:func:`predicted_pairs`);
        ``reconstructions`` ``(B, 2, 1, H, W)``, the decoder masked by each predicted class in turn.
    """
    if model.decoder is None:
        raise ValueError("reconstruct_predicted needs a CapsNet with a decoder (reconstruction=True)")
    device = next(model.parameters()).device
    with eval_mode(model):
        out = model(images.to(device))  # lengths (B, N_out), poses (B, N_out, D_out)
        predicted = predicted_pairs(out.lengths, labels)  # (B, 2)
        drawn = [model.decoder(out.poses, predicted[:, k].to(device)) for k in range(2)]  # 2 x (B, C, H, W)
    reconstructions = torch.stack(drawn, dim=1)  # (B, 2, C, H, W)
    return {"lengths": out.lengths.cpu(), "predicted": predicted, "reconstructions": reconstructions.cpu()}


def separation_of_pairs(
    trace_c: Sequence[torch.Tensor],
    primary_lengths: torch.Tensor,
    labels: torch.Tensor,
    ownership: torch.Tensor,
    own_share: float = OWN_SHARE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How strongly routing sends each digit's capsules to that digit, per iteration, summed over pairs.

    Only primary capsules at positions that belong to one digit (:func:`field_ownership` at least
    ``own_share`` for A, at most ``1 - own_share`` for B) count. Per pair and iteration: ``own``
    is their mean coupling to their own digit's class, ``other`` to the other digit's class, each
    mean weighted by ``|u_i|``; the separation is ``own - other`` (0 at iteration 1, where every
    ``c = 1/N_out``; 1 if every capsule sent everything to its own digit).

    Args:
        trace_c: ``R`` tensors ``(B, N_in, N_out)``, the coupling of each iteration.
        primary_lengths: ``(B, N_in)``; labels: ``(B, 2)``; ownership: ``(B, H', W')``.

    Returns:
        ``sums`` ``(R, 2)`` float64 on the CPU: own and other summed over the measured pairs, and
        ``measured`` ``(B,)`` bool: the pairs with at least one owned position.
    """
    if not 0.5 < own_share <= 1.0:
        raise ValueError(f"own_share must lie in (0.5, 1], got {own_share}")
    batch, num_in = primary_lengths.shape
    grid_cells = ownership.shape[1] * ownership.shape[2]
    owner_a = (ownership >= own_share).reshape(batch, 1, grid_cells)  # (B, 1, H'W'): broadcast over the types
    owner_b = (ownership <= 1 - own_share).reshape(batch, 1, grid_cells)  # (B, 1, H'W')
    types = num_in // grid_cells
    weight_a = (primary_lengths.reshape(batch, types, grid_cells) * owner_a).reshape(batch, num_in)  # (B, N_in)
    weight_b = (primary_lengths.reshape(batch, types, grid_cells) * owner_b).reshape(batch, num_in)  # (B, N_in)
    total = weight_a.sum(dim=1) + weight_b.sum(dim=1)  # (B,)
    measured = total > 0  # (B,)
    labels = labels.to(primary_lengths.device)
    rows = []
    for c in trace_c:
        to_a = c.gather(2, labels[:, None, :1].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
        to_b = c.gather(2, labels[:, None, 1:].expand(-1, num_in, 1))[..., 0]  # (B, N_in)
        own = ((weight_a * to_a).sum(dim=1) + (weight_b * to_b).sum(dim=1)) / total.clamp_min(1e-12)  # (B,)
        other = ((weight_a * to_b).sum(dim=1) + (weight_b * to_a).sum(dim=1)) / total.clamp_min(1e-12)  # (B,)
        rows.append(torch.stack([own[measured].sum(), other[measured].sum()]))
    return torch.stack(rows).double().cpu(), measured.cpu()
