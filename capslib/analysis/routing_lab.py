"""A routing lab: synthetic prediction vectors whose agreement you choose, for notebook 03.

A trained CapsNet's prediction vectors ``u_hat`` are 16-dimensional and come in 1152 x 10; here
they are few, 2-D (or 3-D) and built to a recipe, so that routing by agreement
(:func:`capslib.dynamic_routing`) can be watched: for each output capsule ``j`` a *cluster* of
input capsules casts votes ``u_hat_{j|i}`` that point the same way (up to noise), and every other
vote points in a random direction. Routing should then couple each cluster to its output and move
``v_j`` onto the cluster; how fast depends on the cluster size, the noise and the votes' length.

Pure tensors, no plotting (the figure is :func:`capslib.plots.plot_routing_lab`). Shapes use the
package vocabulary: ``N_in`` input capsules, ``N_out`` output capsules, ``D`` the votes' dimension.
"""

from __future__ import annotations

import math

import torch

__all__ = ["synthetic_votes", "cluster_coupling"]


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_float(name: str, value: object, positive: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def synthetic_votes(
    num_out: int = 2,
    dim: int = 2,
    cluster_size: int = 6,
    num_scattered: int = 12,
    noise: float = 0.2,
    vote_length: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction vectors with one cluster of agreeing votes per output capsule, among scattered ones.

    Input capsules ``i = j * cluster_size ... (j + 1) * cluster_size - 1`` form the cluster of output
    ``j``: their vote for ``j`` is ``vote_length * (d_j + noise * e) / |d_j + noise * e|`` around a
    random unit direction ``d_j`` (``e`` standard normal). The last ``num_scattered`` input capsules
    belong to no cluster. Every vote that is not in output ``j``'s cluster (the scattered capsules'
    and the other clusters' votes for ``j``) points in an independent random direction: together
    they add up to a random vector of length about ``vote_length * sqrt(N_in - cluster_size)``,
    which pulls the first, uniform, ``s_j`` off the cluster (and, with many of them, can outvote a
    small cluster). Every vote has length ``vote_length``, so only the directions say who agrees
    with whom.

    Args:
        num_out: ``N_out >= 1`` output capsules (with 1, every coupling is 1: the softmax runs over
            the outputs).
        dim: ``D >= 2``, the dimension of the votes (2 or 3 to draw them).
        cluster_size: input capsules in each output's cluster (>= 1).
        num_scattered: input capsules in no cluster (>= 0).
        noise: spread of a cluster's directions (>= 0; 0 is perfect agreement, about 1 hardly a cluster).
        vote_length: the length of every vote (> 0).
        seed: seeds a private generator (the global random state is left alone).

    Returns:
        ``(u_hat, membership)``: ``u_hat`` ``(1, N_in, N_out, D)`` with
        ``N_in = N_out * cluster_size + num_scattered`` (a batch of one, ready for
        :func:`capslib.dynamic_routing`), and ``membership`` ``(N_in,)`` long: the output whose
        cluster input capsule ``i`` belongs to, ``-1`` for a scattered one.

    Raises:
        ValueError: for a count, noise or length out of range.
    """
    num_out = _check_int("num_out", num_out, 1)
    dim = _check_int("dim", dim, 2)
    cluster_size = _check_int("cluster_size", cluster_size, 1)
    num_scattered = _check_int("num_scattered", num_scattered, 0)
    noise = _check_float("noise", noise, positive=False)
    vote_length = _check_float("vote_length", vote_length, positive=True)
    seed = _check_int("seed", seed, 0)

    generator = torch.Generator().manual_seed(seed)
    num_in = num_out * cluster_size + num_scattered
    centres = torch.randn(num_out, dim, generator=generator)  # (N_out, D): each cluster's direction
    centres = centres / torch.linalg.vector_norm(centres, dim=-1, keepdim=True)
    membership = torch.arange(num_in) // cluster_size  # (N_in,)
    membership[num_out * cluster_size :] = -1
    directions = torch.randn(num_in, num_out, dim, generator=generator)  # (N_in, N_out, D): random ways
    for j in range(num_out):
        members = membership == j  # (N_in,)
        spread = noise * torch.randn(cluster_size, dim, generator=generator)  # (cluster_size, D)
        directions[members, j] = centres[j] + spread
    lengths = torch.linalg.vector_norm(directions, dim=-1, keepdim=True).clamp_min(1e-12)  # (N_in, N_out, 1)
    u_hat = vote_length * directions / lengths  # (N_in, N_out, D): every vote has length vote_length
    return u_hat[None], membership  # (1, N_in, N_out, D), (N_in,)


def cluster_coupling(coupling: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """How much of their vote the cluster members send to their own output, per output.

    Args:
        coupling: ``(N_in, N_out)`` coupling coefficients ``c`` of one example (e.g.
            ``result.trace[r].c[0]``).
        membership: ``(N_in,)`` from :func:`synthetic_votes`.

    Returns:
        ``(N_out,)``: entry ``j`` is the mean of ``c_ij`` over the members ``i`` of cluster ``j``
        (``1/N_out`` before routing has moved anything).
    """
    if coupling.dim() != 2 or membership.shape != coupling.shape[:1]:
        raise ValueError(
            f"expected coupling (N_in, N_out) and membership (N_in,), got {tuple(coupling.shape)} and "
            f"{tuple(membership.shape)}"
        )
    num_out = coupling.shape[1]
    means = []
    for j in range(num_out):
        members = membership == j  # (N_in,)
        means.append(coupling[members, j].mean() if members.any() else coupling.new_tensor(float("nan")))
    return torch.stack(means)  # (N_out,)
