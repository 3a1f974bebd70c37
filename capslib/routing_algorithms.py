"""Routing algorithms side by side: one signature, one table.

:data:`ROUTING_ALGORITHMS` maps a name to a function ``f(u_hat, iterations, **options)`` that
routes the prediction vectors of one capsule layer to the next:

=========  ==============================  ==================================================
name       function                        what decides where a vote goes
=========  ==============================  ==================================================
dynamic    :func:`capslib.dynamic_routing`  agreement with the output, iterated (Sabour et al. 2017)
uniform    :func:`uniform_routing`          nothing: ``c = 1/N_out`` (the baseline of Paik et al. 2019)
self_att.  :func:`self_attention_routing`   agreement with the other votes, once (Mazzia et al. 2021)
em         :func:`em_routing`               a Gaussian mixture fitted by EM (Hinton et al. 2018)
=========  ==============================  ==================================================

Every entry takes ``u_hat`` ``(B, N_in, N_out, D_out)`` and returns ``(v, c)``: ``v``
``(B, N_out, D_out)`` the output capsules, ``c`` ``(B, N_in, N_out)`` each input's coupling (or
EM's assignment), summing to 1 over the OUTPUTS. With ``return_trace=True`` it returns a
:class:`capslib.RoutingResult` with one :class:`capslib.RoutingStep` per iteration (one for the
algorithms that do not iterate). Each example routes on its own: nothing is shared across the batch.

The functions here are the readable versions the notebooks trace; ``"dynamic"`` also has a faster
implementation, picked by :class:`capslib.RoutingCaps`' ``routing_implementation`` switch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .functional import autocast_enabled, check_iterations, efficient_squash, squash
from .routing import RoutingResult, RoutingStep, check_u_hat, dynamic_routing

__all__ = [
    "ROUTING_ALGORITHMS",
    "check_routing_algorithm",
    "uniform_routing",
    "self_attention_routing",
    "em_routing",
]

SQUASHES: dict[str, Callable[..., torch.Tensor]] = {"sabour": squash, "efficient": efficient_squash}
"""Squash functions by name: Eq. 1 of Sabour et al. 2017, and Efficient-CapsNet's ``(1 - e^-|s|) s/|s|``."""


def _check_squash(name: object) -> Callable[..., torch.Tensor]:
    if not isinstance(name, str) or name not in SQUASHES:
        raise ValueError(f"squash must be one of {list(SQUASHES)}, got {name!r}")
    return SQUASHES[name]


def _in_float32(u_hat: torch.Tensor) -> bool:
    """Whether ``u_hat`` must be routed again in float32 (under autocast, as dynamic routing is)."""
    return autocast_enabled(u_hat.device.type)


def uniform_routing(
    u_hat: torch.Tensor, iterations: int = 1, *, squash: str = "sabour", return_trace: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | RoutingResult:
    """No routing: every input sends ``1/N_out`` of its vote to every output.

    ``s_j = sum_i u_hat_{j|i} / N_out``, ``v_j = squash(s_j)``: dynamic routing with one iteration,
    the baseline Paik, Kwak & Kim (2019) found the routing algorithms they tested did worse than.
    ``iterations`` is checked and otherwise ignored (there is nothing to iterate).

    Args:
        u_hat: ``(B, N_in, N_out, D_out)`` prediction vectors.
        iterations: an integer >= 1 (ignored).
        squash: ``"sabour"`` (Eq. 1) or ``"efficient"``.
        return_trace: return a :class:`capslib.RoutingResult` with one step.

    Returns:
        ``(v, c)``: ``(B, N_out, D_out)`` and ``(B, N_in, N_out)`` (all ``1/N_out``).
    """
    check_iterations(iterations)
    squash_fn = _check_squash(squash)
    check_u_hat(u_hat)
    if _in_float32(u_hat):
        with torch.autocast(u_hat.device.type, enabled=False):
            return uniform_routing(u_hat.float(), iterations, squash=squash, return_trace=return_trace)
    batch_size, num_in, num_out, _ = u_hat.shape
    b = u_hat.new_zeros(batch_size, num_in, num_out)  # (B, N_in, N_out)
    c = torch.softmax(b, dim=2)  # (B, N_in, N_out): 1/N_out everywhere
    s = torch.einsum("bij,bijd->bjd", c, u_hat)  # (B, N_out, D_out)
    v = squash_fn(s, dim=-1)  # (B, N_out, D_out)
    if return_trace:
        return RoutingResult(v=v, c=c, trace=[RoutingStep(b=b, c=c, s=s, v=v)], u_hat=u_hat)
    return v, c


def self_attention_routing(
    u_hat: torch.Tensor,
    iterations: int = 1,
    *,
    prior: torch.Tensor | None = None,
    scale: float | None = None,
    squash: str = "efficient",
    return_trace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | RoutingResult:
    """Efficient-CapsNet's self-attention routing (Mazzia, Salvetti & Chiaberge 2021), not iterated.

    For each output ``j``, the votes ``U_j`` ``(N_in, D_out)`` attend to each other:
    ``A_j = U_j U_j^T / scale`` ``(N_in, N_in)``. An input whose vote for ``j`` agrees with the other
    votes for ``j`` gets a large row sum ``b_ij = sum_k A_j[i, k]``; ``c_i = softmax_j(b_ij)``
    (over the OUTPUTS); ``s_j = sum_i (c_ij + B_ij) u_hat_{j|i}`` with ``B`` a learned log prior
    (``prior``); ``v_j = squash(s_j)``.

    Paper and code differ on the scale: the paper divides by the square root of the (input)
    capsule dimension ``d^l``, the authors' released code by ``sqrt(D_out)``, the dimension of the
    votes. ``scale=None`` follows the code (``sqrt(D_out)``); pass ``scale=math.sqrt(D_in)`` for the
    paper's. In both, the prior is added AFTER the softmax, so ``c + B`` need not sum to 1; the
    returned ``c`` is the softmax alone, which does.

    Args:
        u_hat: ``(B, N_in, N_out, D_out)`` prediction vectors.
        iterations: an integer >= 1 (ignored: the algorithm is not iterative).
        prior: ``(N_in, N_out)`` the learned log prior ``B``, or None (zeros, its initial value).
        scale: the divisor of the agreement, > 0; None: ``sqrt(D_out)`` as in the released code.
        squash: ``"efficient"`` (the paper's, default) or ``"sabour"``.
        return_trace: return a :class:`capslib.RoutingResult` with one step (its ``b`` holds the
            scaled row sums of the attention matrices).

    Returns:
        ``(v, c)``: ``(B, N_out, D_out)`` and ``(B, N_in, N_out)``.
    """
    check_iterations(iterations)
    squash_fn = _check_squash(squash)
    check_u_hat(u_hat)
    batch_size, num_in, num_out, dim = u_hat.shape
    if prior is not None and (not isinstance(prior, torch.Tensor) or tuple(prior.shape) != (num_in, num_out)):
        got = tuple(prior.shape) if isinstance(prior, torch.Tensor) else type(prior).__name__
        raise ValueError(f"prior must be a tensor of shape (N_in, N_out) = ({num_in}, {num_out}), got {got}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
        raise ValueError(f"scale must be a number > 0 or None, got {scale!r}")
    if _in_float32(u_hat):
        with torch.autocast(u_hat.device.type, enabled=False):
            prior32 = None if prior is None else prior.float()
            return self_attention_routing(
                u_hat.float(), iterations, prior=prior32, scale=scale, squash=squash, return_trace=return_trace
            )
    scale = math.sqrt(dim) if scale is None else float(scale)
    # b_ij = sum_k (u_hat_{j|i} . u_hat_{j|k}) / scale = u_hat_{j|i} . (sum_k u_hat_{j|k}) / scale:
    # the row sum of A_j, computed without the (N_in, N_in) matrix.
    total = u_hat.sum(dim=1, keepdim=True)  # (B, 1, N_out, D_out): sum over the inputs k
    b = (u_hat * total).sum(dim=-1) / scale  # (B, N_in, N_out)
    c = torch.softmax(b, dim=2)  # (B, N_in, N_out): sums to 1 over the OUTPUT capsules
    weights = c if prior is None else c + prior  # the prior is added after the softmax, as in the paper
    s = torch.einsum("bij,bijd->bjd", weights, u_hat)  # (B, N_out, D_out)
    v = squash_fn(s, dim=-1)  # (B, N_out, D_out)
    if return_trace:
        return RoutingResult(v=v, c=c, trace=[RoutingStep(b=b, c=c, s=s, v=v)], u_hat=u_hat)
    return v, c


def _per_iteration(value: float | Sequence[float], iterations: int, name: str) -> list[float]:
    """``value`` for each of ``iterations`` iterations: a number for all, or one number each."""
    values = [value] * iterations if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        values = [float(x) for x in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != iterations or not all(math.isfinite(x) and x > 0 for x in values):
        raise ValueError(f"{name} must be a number > 0 or {iterations} of them (one per iteration), got {value!r}")
    return values


def em_routing(
    u_hat: torch.Tensor,
    iterations: int = 3,
    *,
    activations: torch.Tensor | None = None,
    beta_u: float | torch.Tensor = 0.0,
    beta_a: float | torch.Tensor = 0.0,
    inverse_temperature: float | Sequence[float] = 1.0,
    eps: float = 1e-6,
    return_trace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | RoutingResult:
    """EM routing of matrix capsules (Hinton, Sabour & Frosst 2018, Procedure 1), on vector votes.

    Each output ``j`` is a Gaussian over the ``D_out`` components of the votes; the assignments
    ``R`` ``(B, N_in, N_out)`` start at ``1/N_out``; each iteration runs

    * M-step: ``R_ij <- R_ij a_i``; ``mu_j = sum_i R_ij V_ij / sum_i R_ij``;
      ``sigma_j^2 = sum_i R_ij (V_ij - mu_j)^2 / sum_i R_ij`` (per component ``h``);
      ``cost_j^h = (beta_u + log sigma_j^h) sum_i R_ij``;
      ``a_j = logistic(lambda (beta_a - sum_h cost_j^h))``;
    * E-step (skipped after the last M-step, whose outputs nothing reads):
      ``p_ij = N(V_ij; mu_j, sigma_j)``; ``R_ij = a_j p_ij / sum_k a_k p_ik``.

    The paper's capsules are 4x4 pose matrices with an activation; here the votes are the
    ``D_out``-dimensional vectors of :class:`capslib.RoutingCaps`, so EM plugs into the same layer.
    To feed the margin loss and the decoder like the other algorithms, the output capsule is
    ``v_j = a_j mu_j / |mu_j|``: the direction of the pose mean, with the activation as its length.
    ``sigma^2`` gets ``eps`` added, so a collapsed component stays finite; the E-step runs in
    log space.

    Args:
        u_hat: ``(B, N_in, N_out, D_out)`` the votes ``V``.
        iterations: ``>= 1`` (the paper uses 3).
        activations: ``(B, N_in)`` input activations ``a_i`` in [0, 1], or None (all 1: vector
            capsules carry no separate activation).
        beta_u, beta_a: the learned costs, numbers or tensors of shape ``(N_out,)``.
        inverse_temperature: ``lambda``, a number for every iteration or one per iteration (the
            paper raises it from iteration to iteration, without giving its schedule).
        eps: added to ``sigma^2`` and to the denominators.
        return_trace: return a :class:`capslib.RoutingResult`: per iteration ``b = log R`` (the
            assignments' logs), ``c = R``, ``s = mu`` and ``v``; its ``activations`` hold ``a_j``.

    Returns:
        ``(v, c)``: ``(B, N_out, D_out)`` and ``c = R`` ``(B, N_in, N_out)``, the assignments of
        the last M-step, each input's summing to 1 over the outputs.
    """
    iterations = check_iterations(iterations)
    lambdas = _per_iteration(inverse_temperature, iterations, "inverse_temperature")
    check_u_hat(u_hat)
    batch_size, num_in, num_out, _ = u_hat.shape
    if activations is not None and (
        not isinstance(activations, torch.Tensor) or tuple(activations.shape) != (batch_size, num_in)
    ):
        got = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise ValueError(f"activations must be a tensor of shape (B, N_in) = ({batch_size}, {num_in}), got {got}")
    for name, beta in (("beta_u", beta_u), ("beta_a", beta_a)):
        if isinstance(beta, torch.Tensor) and beta.dim() > 0 and tuple(beta.shape) != (num_out,):
            raise ValueError(
                f"{name} must be a number or a tensor of shape (N_out,) = ({num_out},), got {tuple(beta.shape)}"
            )
    if _in_float32(u_hat):
        with torch.autocast(u_hat.device.type, enabled=False):
            return em_routing(
                u_hat.float(),
                iterations,
                activations=None if activations is None else activations.float(),
                beta_u=beta_u.float() if isinstance(beta_u, torch.Tensor) else beta_u,
                beta_a=beta_a.float() if isinstance(beta_a, torch.Tensor) else beta_a,
                inverse_temperature=lambdas,
                eps=eps,
                return_trace=return_trace,
            )
    a_in = u_hat.new_ones(batch_size, num_in) if activations is None else activations  # (B, N_in)
    beta_u_j = beta_u.reshape(-1, 1) if isinstance(beta_u, torch.Tensor) else beta_u  # (N_out, 1): per output j
    log_r = torch.full_like(u_hat[..., 0], -math.log(num_out))  # (B, N_in, N_out): R = 1/N_out
    trace: list[RoutingStep] = []
    for t, lam in enumerate(lambdas):
        r = log_r.exp()  # (B, N_in, N_out): each row sums to 1 over the outputs
        # M-step. i: input capsule, j: output capsule, d: component.
        weighted = r * a_in.unsqueeze(-1)  # (B, N_in, N_out): R_ij a_i
        mass = weighted.sum(dim=1) + eps  # (B, N_out): sum_i R_ij
        mu = torch.einsum("bij,bijd->bjd", weighted, u_hat) / mass.unsqueeze(-1)  # (B, N_out, D_out)
        deviation = u_hat - mu.unsqueeze(1)  # (B, N_in, N_out, D_out)
        var = torch.einsum("bij,bijd->bjd", weighted, deviation**2) / mass.unsqueeze(-1) + eps  # (B, N_out, D_out)
        cost = (beta_u_j + 0.5 * torch.log(var)) * mass.unsqueeze(-1)  # (B, N_out, D_out): log sigma = log(var) / 2
        logit = lam * (beta_a - cost.sum(dim=-1))  # (B, N_out)
        a_out = torch.sigmoid(logit)  # (B, N_out)
        v = mu * (a_out / torch.linalg.vector_norm(mu, dim=-1).clamp_min(eps)).unsqueeze(-1)  # (B, N_out, D_out)
        if return_trace:
            trace.append(RoutingStep(b=log_r, c=r, s=mu, v=v))
        if t < iterations - 1:
            # E-step, in log space: log p_ij = -1/2 sum_d [log(2 pi sigma^2) + (V - mu)^2 / sigma^2].
            log_p = -0.5 * (torch.log(2 * math.pi * var).unsqueeze(1) + deviation**2 / var.unsqueeze(1)).sum(dim=-1)
            log_r = torch.log_softmax(torch.nn.functional.logsigmoid(logit).unsqueeze(1) + log_p, dim=2)
    if return_trace:
        return RoutingResult(v=v, c=r, trace=trace, u_hat=u_hat, activations=a_out)
    return v, r


ROUTING_ALGORITHMS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor] | RoutingResult]] = {
    "dynamic": dynamic_routing,
    "uniform": uniform_routing,
    "self_attention": self_attention_routing,
    "em": em_routing,
}
"""The routing algorithms by name: ``f(u_hat, iterations, **options) -> (v, c)`` (or a
:class:`capslib.RoutingResult` with ``return_trace=True``)."""


def check_routing_algorithm(name: object) -> str:
    """Return ``name`` if it is a key of :data:`ROUTING_ALGORITHMS`, else raise ``ValueError``."""
    if not isinstance(name, str) or name not in ROUTING_ALGORITHMS:
        raise ValueError(f"routing must be one of {list(ROUTING_ALGORITHMS)}, got {name!r}")
    return name
