"""Dynamic routing by agreement: Procedure 1 of Sabour et al. 2017, vectorised.

Paper symbols, per example, input capsule ``i`` and output capsule ``j``:

=========  ======================  ===============================================
symbol     tensor here             meaning
=========  ======================  ===============================================
``u_hat``  ``(B, N_in, N_out, D_out)``  prediction vectors ``u_hat_{j|i} = W_ij u_i`` (Eq. 2)
``b``      ``(B, N_in, N_out)``    routing logits, 0 at the start of every example
``c``      ``(B, N_in, N_out)``    coupling coefficients ``softmax_j(b_ij)`` (Eq. 3);
                                   each input capsule's ``c_i`` sums to 1 over the OUTPUTS
``s``      ``(B, N_out, D_out)``   ``s_j = sum_i c_ij u_hat_{j|i}`` (Eq. 2)
``v``      ``(B, N_out, D_out)``   ``v_j = squash(s_j)`` (Eq. 1)
=========  ======================  ===============================================

The logits ``b`` carry a batch axis: every example routes on its own, so a sample's output never
depends on what else is in its batch (a known bug of several public implementations keeps one
``b`` for the whole batch).

This is the readable reference: the code the notebooks trace, and what
``RoutingCaps(routing_implementation="reference")`` runs. :mod:`capslib.fused_routing` computes
the same numbers faster (tested equal to this module, to float tolerance).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from .functional import squash

__all__ = ["dynamic_routing", "RoutingStep", "RoutingResult", "check_iterations"]


@dataclass
class RoutingStep:
    """One routing iteration ``r`` (0-based), all tensors of one batch.

    Attributes:
        b: ``(B, N_in, N_out)`` the logits at the START of iteration ``r``, i.e. the ones its
            softmax used (``b`` of iteration 0 is all zeros). The logits after iteration ``r``
            are ``b`` of iteration ``r + 1``.
        c: ``(B, N_in, N_out)`` coupling coefficients ``softmax(b, dim=N_out)``.
        s: ``(B, N_out, D_out)`` weighted sums of the predictions.
        v: ``(B, N_out, D_out)`` squashed outputs of iteration ``r``.
    """

    b: torch.Tensor
    c: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor


@dataclass
class RoutingResult:
    """What :func:`dynamic_routing` returns when asked for a trace.

    Attributes:
        v: ``(B, N_out, D_out)`` output capsules after the last iteration.
        c: ``(B, N_in, N_out)`` coupling coefficients of the last iteration.
        trace: one :class:`RoutingStep` per iteration (exactly ``iterations`` entries).
        u_hat: ``(B, N_in, N_out, D_out)`` the prediction vectors that were routed.
    """

    v: torch.Tensor
    c: torch.Tensor
    trace: list[RoutingStep]
    u_hat: torch.Tensor


def check_iterations(iterations: object) -> int:
    """Return ``iterations`` as an int, or raise ``ValueError`` if it is not an integer >= 1."""
    try:
        value = operator.index(iterations)  # ints and NumPy integers; not floats
    except TypeError:
        value = None
    if isinstance(iterations, bool) or value is None or value < 1:
        raise ValueError(f"routing iterations must be an integer >= 1, got {iterations!r}")
    return value


def dynamic_routing(
    u_hat: torch.Tensor,
    iterations: int = 3,
    detach_intermediate: bool = False,
    return_trace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | RoutingResult:
    """Route prediction vectors to output capsules (Procedure 1).

    For ``r = 1..iterations``: ``c = softmax(b, dim=N_out)``; ``s = sum_i c u_hat``;
    ``v = squash(s, dim=D_out)``; ``b += u_hat . v`` (the agreement). The last update of ``b``
    is skipped because nothing reads it.

    Args:
        u_hat: ``(B, N_in, N_out, D_out)`` prediction vectors.
        iterations: ``R >= 1``; 1 means uniform coupling ``c = 1/N_out``.
        detach_intermediate: if True, gradients flow only through the last iteration's
            ``s = sum_i c u_hat`` (``c`` is then a constant). The default, False, lets them flow
            through every iteration, as the paper's official TensorFlow code does.
        return_trace: if True, return a :class:`RoutingResult` with every iteration's
            ``b, c, s, v``; otherwise return ``(v, c)``.

    Returns:
        ``(v, c)`` with ``v`` ``(B, N_out, D_out)`` and ``c`` ``(B, N_in, N_out)`` (the final
        coupling coefficients), or a :class:`RoutingResult`.
    """
    iterations = check_iterations(iterations)
    if not isinstance(u_hat, torch.Tensor) or u_hat.dim() != 4:
        shape = tuple(u_hat.shape) if isinstance(u_hat, torch.Tensor) else type(u_hat).__name__
        raise ValueError(f"u_hat must have shape (B, N_in, N_out, D_out), got {shape}")

    batch_size, num_in, num_out, _ = u_hat.shape
    # One set of logits per example: never shared across the batch.
    b = u_hat.new_zeros(batch_size, num_in, num_out)  # (B, N_in, N_out)
    u_hat_detached = u_hat.detach() if detach_intermediate else u_hat
    trace: list[RoutingStep] = []
    for r in range(iterations):
        last = r == iterations - 1
        votes = u_hat if last else u_hat_detached  # (B, N_in, N_out, D_out)
        c = torch.softmax(b, dim=2)  # (B, N_in, N_out): sums to 1 over the OUTPUT capsules
        # i: input capsule, j: output capsule, d: output capsule dimension.
        s = torch.einsum("bij,bijd->bjd", c, votes)  # (B, N_out, D_out)
        v = squash(s, dim=-1)  # (B, N_out, D_out)
        if return_trace:
            trace.append(RoutingStep(b=b, c=c, s=s, v=v))
        if not last:
            agreement = torch.einsum("bijd,bjd->bij", votes, v)  # (B, N_in, N_out)
            b = b + agreement
    if return_trace:
        return RoutingResult(v=v, c=c, trace=trace, u_hat=u_hat)
    return v, c
