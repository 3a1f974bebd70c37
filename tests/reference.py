"""A slow, obviously-correct transcription of Procedure 1 of Sabour, Frosst & Hinton 2017.

Everything here loops explicitly over examples ``n``, input capsules ``i`` and output capsules
``j``; the only vector operations are a dot product or a scaling of ONE capsule vector of length
``D``. No einsum, no broadcasting over capsules. It is meant to be read next to the paper:

    Procedure 1 Routing algorithm.
    1: procedure ROUTING(u_hat_{j|i}, r, l)
    2:   for all capsule i in layer l and capsule j in layer (l + 1): b_ij <- 0.
    3:   for r iterations do
    4:     for all capsule i in layer l: c_i <- softmax(b_i)              (softmax over j, Eq. 3)
    5:     for all capsule j in layer (l + 1): s_j <- sum_i c_ij u_hat_{j|i}
    6:     for all capsule j in layer (l + 1): v_j <- squash(s_j)          (Eq. 1)
    7:     for all capsule i in layer l and capsule j in layer (l + 1): b_ij <- b_ij + u_hat_{j|i} . v_j
    return v_j

The tensors are built from 0-d / 1-d torch pieces so autograd can differentiate through the
reference too (used to check the library's gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ReferenceStep:
    """One iteration, all of a batch: ``b`` (logits at the START of the iteration), ``c``, ``s``, ``v``."""

    b: torch.Tensor  # (B, N_in, N_out)
    c: torch.Tensor  # (B, N_in, N_out)
    s: torch.Tensor  # (B, N_out, D)
    v: torch.Tensor  # (B, N_out, D)


def squash_reference(s: torch.Tensor) -> torch.Tensor:
    """Eq. 1 for ONE vector ``s`` of shape ``(D,)``: ``|s|^2 / (1 + |s|^2) * s / |s|``; 0 for ``s = 0``."""
    squared_norm = (s * s).sum()
    if float(squared_norm.detach()) == 0.0:
        return torch.zeros_like(s)
    norm = torch.sqrt(squared_norm)
    return squared_norm / (1.0 + squared_norm) * s / norm


def softmax_reference(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    """Softmax of a Python list of 0-d tensors (one input capsule's logits over the outputs)."""
    largest = max(float(x.detach()) for x in logits)  # shift for stability; does not change the result
    exps = [torch.exp(x - largest) for x in logits]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return [e / total for e in exps]


def weighted_sum_reference(c: torch.Tensor, u_hat: torch.Tensor) -> torch.Tensor:
    """Line 5: ``s_j = sum_i c_ij u_hat_{j|i}`` for every example and output capsule.

    Args:
        c: ``(B, N_in, N_out)``; u_hat: ``(B, N_in, N_out, D)``.

    Returns:
        ``(B, N_out, D)``.
    """
    batch, num_in, num_out, _ = u_hat.shape
    per_example = []
    for n in range(batch):
        per_output = []
        for j in range(num_out):
            s_j = c[n, 0, j] * u_hat[n, 0, j]
            for i in range(1, num_in):
                s_j = s_j + c[n, i, j] * u_hat[n, i, j]
            per_output.append(s_j)
        per_example.append(torch.stack(per_output))
    return torch.stack(per_example)


def routing_reference(u_hat: torch.Tensor, iterations: int, agreement_scale: float = 1.0) -> list[ReferenceStep]:
    """Procedure 1, loop by loop, for a batch ``u_hat`` of shape ``(B, N_in, N_out, D)``.

    ``agreement_scale`` multiplies the agreement of line 7; 1 is the paper, anything else is not.

    Returns one :class:`ReferenceStep` per iteration; ``steps[-1].v`` is the routing output.
    """
    batch, num_in, num_out, _ = u_hat.shape
    zero = u_hat.new_zeros(())
    # b[n][i][j]: one logit per example, input and output capsule (line 2).
    b = [[[zero for _ in range(num_out)] for _ in range(num_in)] for _ in range(batch)]
    steps = []
    for _ in range(iterations):
        b_start = torch.stack([torch.stack([torch.stack(b[n][i]) for i in range(num_in)]) for n in range(batch)])
        # Line 4: c_i = softmax over the OUTPUT capsules j of b_i.
        c = [[softmax_reference(b[n][i]) for i in range(num_in)] for n in range(batch)]
        c_tensor = torch.stack([torch.stack([torch.stack(c[n][i]) for i in range(num_in)]) for n in range(batch)])
        # Line 5.
        s = weighted_sum_reference(c_tensor, u_hat)
        # Line 6.
        v = torch.stack([torch.stack([squash_reference(s[n, j]) for j in range(num_out)]) for n in range(batch)])
        steps.append(ReferenceStep(b=b_start, c=c_tensor, s=s, v=v))
        # Line 7: agreement u_hat_{j|i} . v_j.
        b = [
            [
                [b[n][i][j] + agreement_scale * (u_hat[n, i, j] * v[n, j]).sum() for j in range(num_out)]
                for i in range(num_in)
            ]
            for n in range(batch)
        ]
    return steps


def predictions_reference(weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ``u_hat_{j|i} = W_ij u_i``, one matrix-vector product written as row dot products.

    Args:
        weight: ``(N_in, N_out, D_out, D_in)``; u: ``(B, N_in, D_in)``.

    Returns:
        ``(B, N_in, N_out, D_out)``.
    """
    batch, num_in, _ = u.shape
    _, num_out, out_dim, _ = weight.shape
    out = []
    for n in range(batch):
        per_input = []
        for i in range(num_in):
            per_output = []
            for j in range(num_out):
                rows = [(weight[i, j, e] * u[n, i]).sum() for e in range(out_dim)]
                per_output.append(torch.stack(rows))
            per_input.append(torch.stack(per_output))
        out.append(torch.stack(per_input))
    return torch.stack(out)


def squash_formula(s: torch.Tensor) -> torch.Tensor:
    """Eq. 1 applied to every vector along the last axis of ``s``, one vector at a time."""
    flat = s.reshape(-1, s.shape[-1])
    return torch.stack([squash_reference(row) for row in flat]).reshape(s.shape)
