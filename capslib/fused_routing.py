"""The ``"fused"`` routing implementation: prediction vectors + dynamic routing in one autograd
function with a hand-written backward.

An optimisation of the reference, not a second algorithm: :func:`routed_capsules` computes exactly
what ``dynamic_routing(layer.prediction_vectors(u))`` computes (:mod:`capslib.routing` is the
readable reference the notebooks trace; ``tests/test_fused_routing.py`` checks values and
gradients equal in float64), but faster on the CPU, above all in training.
``RoutingCaps(routing_implementation="fused")`` runs it; ``"auto"`` does on the CPU. How:

* ``u_hat`` is kept in the layout ``(B, N_out, N_in, D_out)`` ("output-major"), so the two routing
  contractions (``s_j = sum_i c_ij u_hat_{j|i}`` and the agreement ``u_hat_{j|i} . v_j``) are batched
  matrix-vector products over contiguous memory: no permuted copies of the 74 MB tensor.
* autograd would store ``u_hat`` once per use and sum one ``u_hat``-sized gradient per use (2R-1
  of them, each a fresh allocation and a pass over memory). The backward here walks the routing
  iterations in reverse on small tensors (``(B, N_out, N_in)`` and ``(B, N_out, D_out)``) and then
  forms the whole ``u_hat`` gradient in ONE batched matrix product with ``K = 2R - 1``:
  ``grad u_hat_{j|i} = sum_r c^r_ij grad s^r_j + k sum_{r<R-1} grad b^{r+1}_ij v^r_j``
  (``k`` the ``agreement_scale``, 1 in the paper).
* on CPU the batch is routed in chunks small enough that their ``u_hat`` is recycled from the
  heap instead of being page-faulted in fresh every time (see ``CPU_CHUNK_BYTES``).
* each batched product is written in the operand layout MKL runs fastest.

Gradients flow through every iteration (as the paper's official code and
:func:`capslib.dynamic_routing` do), or only through the last one with ``detach_intermediate``.
The function is differentiable once (no double backward). Symbols as in :mod:`capslib.routing`.
"""

from __future__ import annotations

import torch

from .functional import autocast_enabled, check_agreement_scale, check_iterations, squash

__all__ = ["routed_capsules"]


def _squash_backward(s: torch.Tensor, grad_v: torch.Tensor) -> torch.Tensor:
    # Differentiate capslib's own squash (same eps, same fp32 arithmetic) on the small (B, N_out, D_out).
    with torch.enable_grad():
        s = s.detach().requires_grad_(True)
        (grad_s,) = torch.autograd.grad(squash(s, dim=-1), s, grad_v)
    return grad_s


def _dot_each_row(votes: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``votes`` ``(B*N_out, N_in, D)`` . ``vectors`` ``(B, N_out, D)`` per row -> ``(B, N_out, N_in)``.

    Written as row vector times transposed matrix: MKL runs that several times faster on CPU than
    the equivalent matrix times column vector.
    """
    batch, num_out, dim = vectors.shape
    rows = torch.bmm(vectors.reshape(batch * num_out, 1, dim), votes.transpose(1, 2))  # (B*N_out, 1, N_in)
    return rows.view(batch, num_out, votes.shape[1])  # N_in spelled out: -1 is ambiguous when B = 0


class _RoutedCapsules(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, weight, iterations: int, detach_intermediate: bool, agreement_scale: float):
        num_in, num_out, out_dim, in_dim = weight.shape
        batch = u.shape[0]
        # u_hat[b, j, i, :] = W_ij u_bi, output-major and contiguous: (B, N_out, N_in, D_out).
        u_hat = torch.einsum("ijed,bid->bjie", weight, u).contiguous()
        votes = u_hat.view(batch * num_out, num_in, out_dim)  # one (N_in, D_out) matrix per (b, j)
        logits = u_hat.new_zeros(batch, num_out, num_in)  # b, transposed: (B, N_out, N_in)
        couplings, inputs, outputs = [], [], []
        for r in range(iterations):
            c = torch.softmax(logits, dim=1)  # over the OUTPUT capsules j
            s = torch.bmm(c.view(batch * num_out, 1, num_in), votes).view(batch, num_out, out_dim)
            v = squash(s, dim=-1)  # (B, N_out, D_out)
            couplings.append(c)
            inputs.append(s)
            outputs.append(v)
            if r < iterations - 1:
                agreement = _dot_each_row(votes, v)  # u_hat_{j|i} . v_j: (B, N_out, N_in)
                logits = logits + (agreement if agreement_scale == 1 else agreement_scale * agreement)
        ctx.iterations, ctx.detach_intermediate, ctx.agreement_scale = iterations, detach_intermediate, agreement_scale
        ctx.save_for_backward(u, weight, u_hat, *couplings, *inputs, *outputs)
        return v, c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_v, grad_c):
        u, weight, u_hat, *saved = ctx.saved_tensors
        iterations, scale = ctx.iterations, ctx.agreement_scale
        couplings = saved[:iterations]
        inputs = saved[iterations : 2 * iterations]
        outputs = saved[2 * iterations :]
        num_in, num_out, out_dim, in_dim = weight.shape
        batch = u.shape[0]
        votes = u_hat.view(batch * num_out, num_in, out_dim)
        if grad_v is None:
            grad_v = torch.zeros_like(outputs[-1])

        # Walk the iterations backwards on small tensors, collecting the rank-one terms of grad u_hat.
        left, right = [], []  # (B, N_out, N_in) and (B, N_out, D_out) factors
        grad_logits_next = None  # d loss / d b^{r+1}, (B, N_out, N_in)
        for r in reversed(range(iterations)):
            if r == iterations - 1:
                grad_v_r = grad_v
            else:  # v^r reached the loss only through the agreement b^{r+1} = b^r + k u_hat . v^r
                grad_agreement = grad_logits_next if scale == 1 else scale * grad_logits_next  # (B, N_out, N_in)
                grad_v_r = torch.bmm(grad_agreement.view(batch * num_out, 1, num_in), votes)
                grad_v_r = grad_v_r.view(batch, num_out, out_dim)
                left.append(grad_agreement)
                right.append(outputs[r])
            grad_s = _squash_backward(inputs[r], grad_v_r)  # (B, N_out, D_out)
            left.append(couplings[r])
            right.append(grad_s)
            if ctx.detach_intermediate or r == 0:
                break  # c^r is a constant (detached), or c^0 = softmax(b^0 = 0) is
            grad_coupling = _dot_each_row(votes, grad_s)  # u_hat_{j|i} . grad s_j: (B, N_out, N_in)
            if r == iterations - 1 and grad_c is not None:
                grad_coupling = grad_coupling + grad_c  # c left the function as (B, N_out, N_in)
            c = couplings[r]
            # softmax over j backwards: c * (g - sum_j c g)
            grad_logits = c * (grad_coupling - (c * grad_coupling).sum(dim=1, keepdim=True))
            # b^r reaches the loss through c^r and, unchanged, through b^{r+1} = b^r + agreement.
            grad_logits_next = grad_logits if grad_logits_next is None else grad_logits_next + grad_logits

        # grad u_hat[b, j, i, :] = sum_k left_k[b, j, i] right_k[b, j, :], one batched product.
        factors = len(left)
        left_stack = torch.stack(left, dim=-1).view(batch * num_out, num_in, factors)
        right_stack = torch.stack(right, dim=-2).view(batch * num_out, factors, out_dim)
        grad_u_hat = torch.bmm(left_stack, right_stack).view(batch, num_out, num_in, out_dim)
        # To the input-major layout (N_in, B, N_out * D_out) once, then one batched product each.
        grad_u_hat = grad_u_hat.permute(2, 0, 1, 3).reshape(num_in, batch, num_out * out_dim)
        grad_u = grad_weight = None
        if ctx.needs_input_grad[0]:
            # Against a (D_in, N_out*D_out)-contiguous copy of W (6 MB): MKL's faster layout here.
            weight_t = weight.reshape(num_in, num_out * out_dim, in_dim).transpose(1, 2).contiguous()
            grad_u = torch.bmm(grad_u_hat, weight_t.transpose(1, 2)).transpose(0, 1)  # (B, N_in, D_in)
        if ctx.needs_input_grad[1]:
            # (D_in x B) @ (B x N_out*D_out) per input capsule, then one small transposing copy:
            # several times faster on CPU than (N_out*D_out x B) @ (B x D_in), a transposed operand.
            per_capsule = torch.bmm(u.permute(1, 2, 0), grad_u_hat)  # (N_in, D_in, N_out*D_out)
            grad_weight = per_capsule.transpose(1, 2).reshape(weight.shape)
        return grad_u, grad_weight, None, None, None


# capslib's one workaround for the CPU allocator, explained here once. glibc's malloc serves every
# allocation above its mmap threshold (at most 32 MiB) with fresh pages from the kernel and hands
# them back on free, so a tensor that size is page-faulted in, and zeroed, every time it is made;
# u_hat at batch 100 is 74 MB. Routing the batch in chunks whose u_hat stays under this many bytes
# lets the heap recycle it instead. benchmarks/allocator.py measures this against the other ways
# around the same cause (micro-batches, a channels-last Conv1: no gain beyond it; glibc's own
# MALLOC_MMAP_MAX_/MALLOC_TRIM_THRESHOLD_, which help every large tensor: docs/performance.md).
CPU_CHUNK_BYTES = 16 * 2**20


def _chunk_size(u: torch.Tensor, weight: torch.Tensor) -> int:
    """Examples per chunk: the whole batch off CPU, else as many as keep u_hat under CPU_CHUNK_BYTES."""
    if u.device.type != "cpu":
        return max(1, u.shape[0])
    num_in, num_out, out_dim, _ = weight.shape
    return max(1, CPU_CHUNK_BYTES // (num_in * num_out * out_dim * u.element_size()))


def routed_capsules(
    u: torch.Tensor,
    weight: torch.Tensor,
    iterations: int = 3,
    detach_intermediate: bool = False,
    *,
    agreement_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dynamic_routing(einsum("ijed,bid->bije", weight, u))``, fused (see the module docstring).

    Under autocast it computes in float32 and returns float32 tensors.

    Args:
        u: ``(B, N_in, D_in)`` input capsules; ``B = 0`` gives empty outputs.
        weight: ``(N_in, N_out, D_out, D_in)`` the transforms ``W_ij``.
        iterations: ``R >= 1`` routing iterations.
        detach_intermediate: gradients only through the last iteration (see :func:`capslib.dynamic_routing`).
        agreement_scale: ``b += agreement_scale * (u_hat . v)``; 1 is the paper (see :func:`capslib.dynamic_routing`).

    Returns:
        ``(v, c)``: ``(B, N_out, D_out)`` output capsules and ``(B, N_in, N_out)`` final coupling
        coefficients (a transposed view).
    """
    iterations = check_iterations(iterations)
    agreement_scale = check_agreement_scale(agreement_scale)
    if u.dim() != 3 or weight.dim() != 4 or u.shape[1] != weight.shape[0] or u.shape[2] != weight.shape[3]:
        raise ValueError(
            "routed_capsules expects u (B, N_in, D_in) and weight (N_in, N_out, D_out, D_in) with matching "
            f"N_in and D_in, got u {tuple(u.shape)} and weight {tuple(weight.shape)}"
        )
    if autocast_enabled(u.device.type):
        # Routing runs in float32 on every path (capslib.routing says why); the hand-written
        # backward also assumes one float dtype throughout.
        with torch.autocast(u.device.type, enabled=False):
            return routed_capsules(
                u.float(), weight.float(), iterations, detach_intermediate, agreement_scale=agreement_scale
            )
    chunk = _chunk_size(u, weight)
    if u.shape[0] <= chunk:
        v, c = _RoutedCapsules.apply(u, weight, iterations, detach_intermediate, agreement_scale)
        return v, c.transpose(1, 2)
    # Every example routes on its own, so chunks of the batch route independently.
    parts = [
        _RoutedCapsules.apply(part, weight, iterations, detach_intermediate, agreement_scale) for part in u.split(chunk)
    ]
    v = torch.cat([v for v, _ in parts])  # (B, N_out, D_out)
    c = torch.cat([c for _, c in parts])  # (B, N_out, N_in)
    return v, c.transpose(1, 2)
