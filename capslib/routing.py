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

:func:`dynamic_routing` is the readable reference: the code the notebooks trace.

The routing table
-----------------
:data:`ROUTING_IMPLEMENTATIONS` maps a name to a routing function, the way transformers'
``ALL_ATTENTION_FUNCTIONS`` maps ``attn_implementation`` to an attention function. Every entry has
one signature, :class:`RoutingFunction`: the input capsules ``u`` and the layer's ``weight`` in,
a :class:`RoutingResult` out (the fused path needs ``u`` and ``weight``, not ``u_hat``: it computes
the prediction vectors inside its own autograd function). :class:`capslib.RoutingCaps` calls
``ROUTING_IMPLEMENTATIONS[name](...)`` and nothing else:

* ``"reference"``: :func:`prediction_vectors`, then :func:`dynamic_routing`;
* ``"fused"``: :func:`capslib.fused_routing.routed_capsules`, the same numbers faster (tested equal);
  it keeps no trace, so asked for one it warns and the reference runs;
* ``"auto"``: :func:`resolve_routing_implementation` picks one of the two.

Under autocast every entry routes in float32 and returns float32 ``v`` and ``c`` (what ``--amp``
promises): the agreement ``u_hat . v`` accumulates into logits that a softmax exponentiates, so
half precision's rounding would reach the coupling coefficients.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .functional import autocast_enabled, check_agreement_scale, check_iterations, squash
from .fused_routing import routed_capsules

__all__ = [
    "dynamic_routing",
    "RoutingStep",
    "RoutingResult",
    "RoutingFunction",
    "ROUTING_IMPLEMENTATIONS",
    "check_iterations",
    "check_u_hat",
    "check_routing_implementation",
    "resolve_routing_implementation",
    "prediction_vectors",
    "route_reference",
    "route_fused",
    "route_auto",
]


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
    """What a routing function of the table returns, and :func:`dynamic_routing` when asked for a trace.

    Attributes:
        v: ``(B, N_out, D_out)`` output capsules after the last iteration.
        c: ``(B, N_in, N_out)`` coupling coefficients of the last iteration.
        trace: one :class:`RoutingStep` per iteration (exactly ``iterations`` entries) when a
            trace was asked for, else empty.
        u_hat: ``(B, N_in, N_out, D_out)`` the prediction vectors that were routed, when the
            routing made them in that layout (the reference does; the fused path does not: None).
        activations: ``(B, N_out)`` the output activations of an algorithm that computes them
            apart from the capsules (EM routing, :func:`capslib.routing_algorithms.em_routing`); else None.
    """

    v: torch.Tensor
    c: torch.Tensor
    trace: list[RoutingStep] = field(default_factory=list)
    u_hat: torch.Tensor | None = None
    activations: torch.Tensor | None = None


def check_u_hat(u_hat: object) -> None:
    """Raise ``ValueError`` unless ``u_hat`` is a tensor ``(B, N_in, N_out, D_out)``."""
    if not isinstance(u_hat, torch.Tensor) or u_hat.dim() != 4:
        shape = tuple(u_hat.shape) if isinstance(u_hat, torch.Tensor) else type(u_hat).__name__
        raise ValueError(f"u_hat must have shape (B, N_in, N_out, D_out), got {shape}")


def dynamic_routing(
    u_hat: torch.Tensor,
    iterations: int = 3,
    detach_intermediate: bool = False,
    return_trace: bool = False,
    *,
    agreement_scale: float = 1.0,
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
        agreement_scale: the update becomes ``b += agreement_scale * (u_hat . v)``. 1 (the default)
            is the paper's Procedure 1; any other value is NOT the paper's algorithm, an
            exploration of what routing would do with a stronger (or weaker) agreement. A finite
            number >= 0; 0 keeps the coupling uniform.

    Returns:
        ``(v, c)`` with ``v`` ``(B, N_out, D_out)`` and ``c`` ``(B, N_in, N_out)`` (the final
        coupling coefficients), or a :class:`RoutingResult`. Under autocast the routing runs in
        float32 and returns float32.
    """
    iterations = check_iterations(iterations)
    agreement_scale = check_agreement_scale(agreement_scale)
    check_u_hat(u_hat)
    if autocast_enabled(u_hat.device.type):
        with torch.autocast(u_hat.device.type, enabled=False):
            return dynamic_routing(
                u_hat.float(), iterations, detach_intermediate, return_trace, agreement_scale=agreement_scale
            )

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
            b = b + (agreement if agreement_scale == 1 else agreement_scale * agreement)
    if return_trace:
        return RoutingResult(v=v, c=c, trace=trace, u_hat=u_hat)
    return v, c


def prediction_vectors(u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 2, ``u_hat_{j|i} = W_ij u_i``: ``u`` ``(B, N_in, D_in)`` and ``weight``
    ``(N_in, N_out, D_out, D_in)`` -> ``(B, N_in, N_out, D_out)``."""
    # i: input capsule, j: output capsule, e: output dim, d: input dim.
    return torch.einsum("ijed,bid->bije", weight, u)  # (B, N_in, N_out, D_out)


# --- the routing table ----------------------------------------------------------------------------


class RoutingFunction(Protocol):
    """The one signature of :data:`ROUTING_IMPLEMENTATIONS`' entries.

    Args:
        u: ``(B, N_in, D_in)`` input capsules.
        weight: ``(N_in, N_out, D_out, D_in)`` the transforms ``W_ij``.
        iterations: ``R >= 1``.
        detach_intermediate, agreement_scale: as in :func:`dynamic_routing`.
        trace: also record every iteration (and ``u_hat``) in the result.

    Returns:
        A :class:`RoutingResult`; ``v`` and ``c`` are float32 under autocast.
    """

    def __call__(
        self,
        u: torch.Tensor,
        weight: torch.Tensor,
        iterations: int,
        *,
        detach_intermediate: bool = False,
        trace: bool = False,
        agreement_scale: float = 1.0,
    ) -> RoutingResult: ...


def route_reference(
    u: torch.Tensor,
    weight: torch.Tensor,
    iterations: int,
    *,
    detach_intermediate: bool = False,
    trace: bool = False,
    agreement_scale: float = 1.0,
) -> RoutingResult:
    """``"reference"``: :func:`prediction_vectors`, then :func:`dynamic_routing` (see :class:`RoutingFunction`)."""
    if autocast_enabled(u.device.type):  # the predictions in float32 too, so both paths route the same u_hat
        with torch.autocast(u.device.type, enabled=False):
            return route_reference(
                u.float(),
                weight.float(),
                iterations,
                detach_intermediate=detach_intermediate,
                trace=trace,
                agreement_scale=agreement_scale,
            )
    u_hat = prediction_vectors(u, weight)  # (B, N_in, N_out, D_out)
    routed = dynamic_routing(u_hat, iterations, detach_intermediate, trace, agreement_scale=agreement_scale)
    return routed if trace else RoutingResult(*routed, u_hat=u_hat)


def route_fused(
    u: torch.Tensor,
    weight: torch.Tensor,
    iterations: int,
    *,
    detach_intermediate: bool = False,
    trace: bool = False,
    agreement_scale: float = 1.0,
) -> RoutingResult:
    """``"fused"``: :func:`capslib.fused_routing.routed_capsules` (see :class:`RoutingFunction`).

    Its iterations live inside one autograd function and are not kept, so a trace asked of it
    warns and the reference runs instead (same numbers, to float tolerance).
    """
    if trace:
        warnings.warn(
            "the fused routing keeps no trace (its iterations live inside one autograd function): "
            "the reference routing runs instead",
            stacklevel=2,
        )
        return route_reference(
            u, weight, iterations, detach_intermediate=detach_intermediate, trace=True, agreement_scale=agreement_scale
        )
    v, c = routed_capsules(
        u, weight, iterations, detach_intermediate=detach_intermediate, agreement_scale=agreement_scale
    )
    return RoutingResult(v=v, c=c)


def resolve_routing_implementation(name: str, device: torch.device, trace: bool = False) -> str:
    """What ``"auto"`` means, in one rule: ``"fused"`` on the CPU, ``"reference"`` everywhere else.

    On the CPU the fused path is the faster one (``benchmarks/perf.py``); on a GPU both time the
    same (docs/performance.md), so the readable reference runs there. While ``torch.compile``
    traces, ``"auto"`` is the reference too: the compiler fuses it itself, and the fused path's
    hand-written backward would split the compiled graph. A trace is the reference's record, so
    with ``trace`` ``"auto"`` is the reference. ``"reference"`` and ``"fused"`` are taken as given.
    """
    if check_routing_implementation(name) != "auto":
        return name
    fused = device.type == "cpu" and not trace and not torch.compiler.is_compiling()
    return "fused" if fused else "reference"


def route_auto(
    u: torch.Tensor,
    weight: torch.Tensor,
    iterations: int,
    *,
    detach_intermediate: bool = False,
    trace: bool = False,
    agreement_scale: float = 1.0,
) -> RoutingResult:
    """``"auto"``: the entry :func:`resolve_routing_implementation` picks for ``u``'s device."""
    name = resolve_routing_implementation("auto", u.device, trace)
    return ROUTING_IMPLEMENTATIONS[name](
        u, weight, iterations, detach_intermediate=detach_intermediate, trace=trace, agreement_scale=agreement_scale
    )


ROUTING_IMPLEMENTATIONS: dict[str, RoutingFunction] = {
    "auto": route_auto,
    "reference": route_reference,
    "fused": route_fused,
}
"""The routing table: ``routing_implementation`` name -> :class:`RoutingFunction`."""


def check_routing_implementation(name: object) -> str:
    """Return ``name`` if it is a key of :data:`ROUTING_IMPLEMENTATIONS`, else raise ``ValueError``."""
    if not isinstance(name, str) or name not in ROUTING_IMPLEMENTATIONS:
        raise ValueError(f"routing_implementation must be one of {list(ROUTING_IMPLEMENTATIONS)}, got {name!r}")
    return name
