"""A routing lab: synthetic prediction vectors whose agreement you choose, for notebook 03.

A trained CapsNet's prediction vectors ``u_hat`` are 16-dimensional and come in 1152 x 10; here
they are few, 2-D (or 3-D) and built to a recipe, so that routing by agreement
(:func:`capslib.dynamic_routing`) can be watched: for each output capsule ``j`` a *cluster* of
input capsules casts votes ``u_hat_{j|i}`` that point the same way (up to noise), and every other
vote points in a random direction. Routing should then couple each cluster to its output and move
``v_j`` onto the cluster; how fast depends on the cluster size, the noise and the votes' length.

:func:`explaining_away_votes` builds the situation routing was designed for: one ambiguous part
whose votes fit two wholes, and parts that support only one of them; :func:`coupling_history`
follows one input capsule's coupling. :func:`coupling_shift` and :func:`routing_shift_of_images`
measure, on a trained model, how much coupling routing moves between each image's two top classes.
:func:`route_every_way` sends the same votes through every routing algorithm of
:data:`capslib.ROUTING_ALGORITHMS` (notebook 11).

Pure tensors, no plotting (the figures are :func:`capslib.plots.plot_routing_lab`,
:func:`capslib.plots.plot_explaining_away` and :func:`capslib.plots.plot_routing_shift`). Shapes use the
package vocabulary: ``N_in`` input capsules, ``N_out`` output capsules, ``D`` the votes' dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..evaluation.predict import predict
from ..routing import RoutingResult, check_iterations, dynamic_routing
from ..routing_algorithms import ROUTING_ALGORITHMS, check_routing_algorithm
from .routing_stats import _PredictionVectors  # images -> u_hat, for predict()

__all__ = [
    "synthetic_votes",
    "cluster_coupling",
    "explaining_away_votes",
    "coupling_history",
    "coupling_shift",
    "routing_shift_of_images",
    "route_every_way",
]


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


# --- Explaining away: one part, two wholes --------------------------------------------------------

WHOLE_DIRECTION = 45.0  # degrees: where each whole's agreeing votes point, in its own output's panel


def explaining_away_votes(
    parts_a: int = 4,
    parts_b: int = 1,
    ambiguity: float = 10.0,
    spread: float = 20.0,
    vote_length: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D votes of one ambiguous part that fits two wholes, and of parts that support only one.

    Two output capsules, whole A (output 0) and whole B (output 1). Each whole's agreeing votes
    point ``WHOLE_DIRECTION`` degrees in that output's own vote space, fanned out evenly over
    ``+-spread / 2`` degrees. No randomness: the layout is fixed by the arguments.

    * Input capsule 0 is the **ambiguous part**: its vote for A lies ``ambiguity`` degrees off A's
      direction and its vote for B the same ``ambiguity`` degrees off B's, so it fits both wholes
      equally well.
    * Input capsules ``1 .. parts_a`` support only A: their votes for A agree (the fan above);
      their votes for B point away from B, fanned evenly over the half-circle opposite B's
      direction (never less than 90 degrees from it), so they add up to a vote against B.
    * Input capsules ``parts_a + 1 .. parts_a + parts_b`` support only B, built the same way.

    With ``parts_a == parts_b`` the two wholes are the same configuration (only the order of the
    input capsules differs), so routing cannot prefer either: the ambiguous part's coupling stays
    at 1/2, up to float rounding. With more parts for A, ``v_A`` is longer than ``v_B``, so the
    ambiguous part agrees more with A and routing moves its coupling towards A, iteration by
    iteration: the ambiguous part is *explained* by A.

    Args:
        parts_a: parts that support only whole A (>= 0).
        parts_b: parts that support only whole B (>= 0).
        ambiguity: degrees between the ambiguous part's vote for each whole and that whole's
            direction, in [0, 180] (0: it fits both perfectly; 90: neither).
        spread: the width, in degrees, of the fan of a whole's agreeing votes (>= 0).
        vote_length: the length of every vote (> 0).

    Returns:
        ``(u_hat, roles)``: ``u_hat`` ``(1, N_in, 2, 2)`` with ``N_in = 1 + parts_a + parts_b`` (a
        batch of one, for :func:`capslib.dynamic_routing`), and ``roles`` ``(N_in,)`` long: ``-1``
        for the ambiguous part (input capsule 0), ``0`` for a part of A, ``1`` for a part of B.

    Raises:
        ValueError: for a count, angle or length out of range.
    """
    parts_a = _check_int("parts_a", parts_a, 0)
    parts_b = _check_int("parts_b", parts_b, 0)
    ambiguity = _check_float("ambiguity", ambiguity, positive=False)
    if ambiguity > 180.0:
        raise ValueError(f"ambiguity must be an angle in [0, 180] degrees, got {ambiguity!r}")
    spread = _check_float("spread", spread, positive=False)
    vote_length = _check_float("vote_length", vote_length, positive=True)

    def fan(count: int, width: float) -> torch.Tensor:  # (count,): evenly spaced in (-width/2, width/2)
        return width * ((torch.arange(count) + 0.5) / max(count, 1) - 0.5)

    num_in = 1 + parts_a + parts_b
    angles = torch.empty(num_in, 2)  # (N_in, N_out): the direction of each vote, in degrees
    angles[0] = WHOLE_DIRECTION + ambiguity
    a_parts, b_parts = slice(1, 1 + parts_a), slice(1 + parts_a, num_in)
    angles[a_parts, 0] = WHOLE_DIRECTION + fan(parts_a, spread)
    angles[a_parts, 1] = WHOLE_DIRECTION + 180.0 + fan(parts_a, 180.0)
    angles[b_parts, 1] = WHOLE_DIRECTION + fan(parts_b, spread)
    angles[b_parts, 0] = WHOLE_DIRECTION + 180.0 + fan(parts_b, 180.0)
    radians = torch.deg2rad(angles)  # (N_in, N_out)
    u_hat = vote_length * torch.stack([radians.cos(), radians.sin()], dim=-1)  # (N_in, N_out, 2)
    roles = torch.full((num_in,), -1, dtype=torch.long)
    roles[a_parts], roles[b_parts] = 0, 1
    return u_hat[None], roles  # (1, N_in, 2, 2), (N_in,)


def coupling_history(result, input_capsule: int = 0, example: int = 0) -> torch.Tensor:
    """One input capsule's coupling coefficients at every routing iteration.

    Args:
        result: a :class:`capslib.RoutingResult` (``dynamic_routing(..., return_trace=True)``)
            with ``R`` steps of ``c`` ``(B, N_in, N_out)``.
        input_capsule: which input capsule ``i`` (0: the ambiguous part of
            :func:`explaining_away_votes`).
        example: which example of the batch.

    Returns:
        ``(R, N_out)``: row ``r`` is ``c_i`` at iteration ``r + 1`` (it sums to 1 over the outputs).
    """
    if not getattr(result, "trace", None):
        raise ValueError("expected a RoutingResult with a trace (dynamic_routing(..., return_trace=True))")
    batch, num_in = result.trace[0].c.shape[:2]
    for name, value, size in (("input_capsule", input_capsule, num_in), ("example", example, batch)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
            raise ValueError(f"{name} must be an integer in [0, {size - 1}], got {value!r}")
    return torch.stack([step.c[example, input_capsule] for step in result.trace])  # (R, N_out)


def coupling_shift(coupling: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """How much coupling routing moved from each example's runner-up class to its winner.

    Routing starts every coupling at ``1/N_out``, so the coupling to the winner ``a`` minus the
    coupling to the runner-up ``b`` (the two longest outputs) after the last iteration is what
    routing moved between them: ``shift_i = c_ia - c_ib``.

    Args:
        coupling: ``(B, N_in, N_out)`` the final coupling coefficients ``c``.
        lengths: ``(B, N_out)`` the final output lengths ``|v_j|`` (the class scores).

    Returns:
        A dict of tensors: ``"winner"``, ``"runner_up"`` ``(B,)`` long; ``"per_capsule"``
        ``(B, N_in)`` the shifts ``c_ia - c_ib``; ``"mean"`` ``(B,)`` their mean over the input
        capsules (the coupling mass moved, per capsule); ``"largest"`` ``(B,)`` the largest
        ``|shift_i|`` of any one input capsule.
    """
    if coupling.dim() != 3 or lengths.dim() != 2 or coupling.shape[::2] != lengths.shape or lengths.shape[1] < 2:
        raise ValueError(
            f"expected coupling (B, N_in, N_out) and lengths (B, N_out) with N_out >= 2, got "
            f"{tuple(coupling.shape)} and {tuple(lengths.shape)}"
        )
    top = lengths.topk(2, dim=1).indices  # (B, 2): winner, runner-up
    rows = torch.arange(coupling.shape[0], device=coupling.device)  # (B,)
    per_capsule = coupling[rows, :, top[:, 0]] - coupling[rows, :, top[:, 1]]  # (B, N_in)
    return {
        "winner": top[:, 0],
        "runner_up": top[:, 1],
        "per_capsule": per_capsule,
        "mean": per_capsule.mean(dim=1),  # (B,)
        "largest": per_capsule.abs().amax(dim=1),  # (B,)
    }


def routing_shift_of_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    iterations: Sequence[int] = (1, 3, 10),
    shift_at: int = 3,
    batch_size: int = 250,
    progress: bool = False,
) -> dict:
    """Predictions with several iteration counts and the coupling routing moves, in one pass.

    Each batch's ``u_hat`` is routed once, with ``max(iterations + [shift_at])`` iterations and a
    trace: iteration ``r`` of that trace is exactly what routing with ``r`` iterations returns, so
    one routing gives the prediction of every count, and :func:`coupling_shift` after ``shift_at``
    iterations.

    Args:
        model: a trained :class:`capslib.CapsNet`.
        images: ``(B, C, H, W)`` in [0, 1].
        iterations: the iteration counts whose predictions to return (each >= 1).
        shift_at: the iteration count after which to measure the coupling shift (>= 1).
        batch_size: images per batch (>= 1; does not change the result).
        progress: a progress bar over the batches.

    Returns:
        A dict on the CPU: ``"predictions"`` ``{R: (B,) long}``; and, after ``shift_at``
        iterations, ``"winner"``, ``"runner_up"`` ``(B,)`` long, ``"per_capsule"`` ``(B, N_in)``,
        ``"mean"`` and ``"largest"`` ``(B,)`` as :func:`coupling_shift` defines them.
    """
    counts = [check_iterations(r) for r in iterations]
    if not counts:
        raise ValueError("iterations must name at least one iteration count, got an empty sequence")
    shift_at = check_iterations(shift_at)
    _check_int("batch_size", batch_size, 1)
    deepest = max(counts + [shift_at])

    def measure(u_hat: torch.Tensor) -> torch.Tensor:  # (b, N_in, N_out, D_out) -> (b, len(counts) + 2 + N_in)
        trace = dynamic_routing(u_hat, iterations=deepest, return_trace=True).trace
        lengths = [torch.linalg.vector_norm(step.v, dim=-1) for step in trace]  # R x (b, N_out)
        classes = torch.stack([lengths[r - 1].argmax(dim=1) for r in counts], dim=1)  # (b, len(counts))
        shift = coupling_shift(trace[shift_at - 1].c, lengths[shift_at - 1])
        top = torch.stack([shift["winner"], shift["runner_up"]], dim=1)  # (b, 2)
        return torch.cat([classes.float(), top.float(), shift["per_capsule"]], dim=1)

    found = predict(_PredictionVectors(model), images, batch_size, measure, progress=progress, description="routing")
    k = len(counts)
    per_capsule = found[:, k + 2 :]  # (B, N_in)
    return {
        "predictions": {r: found[:, j].long() for j, r in enumerate(counts)},
        "winner": found[:, k].long(),
        "runner_up": found[:, k + 1].long(),
        "per_capsule": per_capsule,
        "mean": per_capsule.mean(dim=1),  # (B,)
        "largest": per_capsule.abs().amax(dim=1),  # (B,)
    }


def route_every_way(
    u_hat: torch.Tensor, iterations: int = 3, algorithms: Sequence[str] | None = None, **options: dict
) -> dict[str, RoutingResult]:
    """The same votes routed by each algorithm, with its trace: the side-by-side of notebook 11.

    Args:
        u_hat: ``(B, N_in, N_out, D)`` prediction vectors (e.g. :func:`synthetic_votes`).
        iterations: for the algorithms that iterate (``dynamic``, ``em``); the others run once.
        algorithms: names from :data:`capslib.ROUTING_ALGORITHMS` (default: all of them, in its order).
        options: per algorithm name, keyword options for it (``em={"inverse_temperature": 0.1}``).

    Returns:
        ``{name: RoutingResult}`` in the order asked, each with one step per iteration it ran.

    Raises:
        ValueError: an unknown algorithm, or options for an algorithm not asked for.
    """
    names = list(ROUTING_ALGORITHMS) if algorithms is None else [check_routing_algorithm(a) for a in algorithms]
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"options given for {stray}, which are not among the algorithms routed {names}")
    check_iterations(iterations)
    return {
        name: ROUTING_ALGORITHMS[name](u_hat, iterations, return_trace=True, **options.get(name, {})) for name in names
    }
