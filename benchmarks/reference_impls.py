"""Reference implementations that ``benchmarks/perf.py`` times capslib against (issue 6).

* :class:`PlainCapsNet`: the "plain vectorised implementation" of the issue: one einsum for the
  predictions ``u_hat``, one Python loop over the routing iterations, nothing else clever. It is
  written independently of capslib but keeps capslib's parameter names and shapes, so
  ``PlainCapsNet().load_state_dict(capslib.CapsNet().state_dict())`` works and both models
  compute the same thing from the same weights (``tests/test_benchmarks.py`` checks it).
  :func:`plain_loss` is its margin + reconstruction loss.
* :func:`textbook_routing`: Procedure 1 of Sabour et al. 2017 with Python loops over the input
  capsules ``i`` and the output capsules ``j`` (vectorised only over the batch and the capsule
  dimension). Slow: for the routing-step-alone comparison at small batch sizes.

Shapes use capslib's vocabulary: ``B`` batch, ``N_in``/``N_out`` capsules in/out,
``D_in``/``D_out`` capsule dimensions, ``R`` routing iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PlainCapsNet", "PlainOutput", "plain_loss", "plain_squash", "textbook_routing"]


def plain_squash(s: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 1 along the last axis, in the paper's form ``|s|^2 / (1 + |s|^2) * s / |s|``: ``(..., D)``."""
    squared_norm = (s * s).sum(dim=-1, keepdim=True)  # (..., 1)
    return squared_norm / (1.0 + squared_norm) * s / torch.sqrt(squared_norm + eps)


@dataclass
class PlainOutput:
    """``lengths`` ``(B, N_out)``, ``poses`` ``(B, N_out, D_out)``, ``reconstructions`` ``(B, C, H, W)``."""

    lengths: torch.Tensor
    poses: torch.Tensor
    reconstructions: torch.Tensor


class _PrimaryCapsParams(nn.Module):
    """Holds ``primary_caps.inner`` (the 9x9 stride-2 convolution) under capslib's name."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.inner = nn.Conv2d(in_channels, out_channels, kernel_size=9, stride=2)


class _DigitCapsParams(nn.Module):
    """Holds ``digit_caps.weight`` ``(N_in, N_out, D_out, D_in)`` under capslib's name."""

    def __init__(self, num_in: int, num_out: int, dim_out: int, dim_in: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(0.01 * torch.randn(num_in, num_out, dim_out, dim_in))


class _DecoderParams(nn.Module):
    """Holds ``decoder.net`` (160 -> 512 -> 1024 -> 784, ReLU, ReLU, sigmoid) under capslib's names."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, 1024),
            nn.ReLU(inplace=True),
            nn.Linear(1024, out_features),
            nn.Sigmoid(),
        )


class PlainCapsNet(nn.Module):
    """The paper's MNIST CapsNet, plainly vectorised; capslib.CapsNet's state-dict layout.

    Args:
        routing_iterations: ``R`` (3).
        image_shape: ``(C, H, W)`` ((1, 28, 28)).
        num_classes, class_dim: ``N_out`` and ``D_out`` (10, 16).
        primary_types, primary_dim: capsule types and ``D_in`` (32, 8).

    Shapes:
        ``x`` ``(B, C, H, W)``, ``y`` ``(B,)`` -> :class:`PlainOutput`.
    """

    def __init__(
        self,
        routing_iterations: int = 3,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        class_dim: int = 16,
        primary_types: int = 32,
        primary_dim: int = 8,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.routing_iterations = routing_iterations
        self.image_shape = tuple(image_shape)
        self.primary_types, self.primary_dim = primary_types, primary_dim
        grid = ((height - 8) - 9) // 2 + 1, ((width - 8) - 9) // 2 + 1  # after the two 9x9 convolutions
        num_in = primary_types * grid[0] * grid[1]
        self.conv1 = nn.Conv2d(channels, 256, kernel_size=9)
        self.primary_caps = _PrimaryCapsParams(256, primary_types * primary_dim)
        self.digit_caps = _DigitCapsParams(num_in, num_classes, class_dim, primary_dim)
        self.decoder = _DecoderParams(num_classes * class_dim, channels * height * width)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> PlainOutput:
        batch = x.shape[0]
        h = torch.relu(self.conv1(x))  # (B, 256, 20, 20)
        h = self.primary_caps.inner(h)  # (B, T*D_in, 6, 6)
        h = h.view(batch, self.primary_types, self.primary_dim, -1)  # (B, T, D_in, 36)
        u = plain_squash(h.transpose(2, 3).reshape(batch, -1, self.primary_dim))  # (B, N_in, D_in)

        # b: batch, i: input capsule, d: input dim, j: output capsule, e: output dim.
        u_hat = torch.einsum("bid,ijed->bije", u, self.digit_caps.weight)  # (B, N_in, N_out, D_out)
        logits = torch.zeros(u_hat.shape[:3], dtype=u_hat.dtype, device=u_hat.device)  # (B, N_in, N_out)
        for r in range(self.routing_iterations):
            coupling = torch.softmax(logits, dim=2)  # (B, N_in, N_out), over the OUTPUT capsules
            v = plain_squash(torch.einsum("bij,bije->bje", coupling, u_hat))  # (B, N_out, D_out)
            if r + 1 < self.routing_iterations:
                logits = logits + torch.einsum("bije,bje->bij", u_hat, v)  # (B, N_in, N_out)
        lengths = v.norm(dim=-1)  # (B, N_out)

        labels = y if y is not None else lengths.argmax(dim=1)  # (B,)
        mask = torch.nn.functional.one_hot(labels, v.shape[1]).to(v.dtype)  # (B, N_out)
        flat = (v * mask[:, :, None]).reshape(batch, -1)  # (B, N_out * D_out)
        reconstructions = self.decoder.net(flat).view(batch, *self.image_shape)  # (B, C, H, W)
        return PlainOutput(lengths=lengths, poses=v, reconstructions=reconstructions)


def plain_loss(
    output: PlainOutput, images: torch.Tensor, labels: torch.Tensor, reconstruction_weight: float = 0.0005
) -> torch.Tensor:
    """Margin loss (Eq. 4; m+ 0.9, m- 0.1, lambda 0.5) + weight x summed squared pixel error, batch means."""
    present = torch.nn.functional.one_hot(labels, output.lengths.shape[1]).to(output.lengths.dtype)  # (B, N_out)
    margin = (
        present * torch.relu(0.9 - output.lengths) ** 2 + 0.5 * (1 - present) * torch.relu(output.lengths - 0.1) ** 2
    )  # (B, N_out)
    recon = ((output.reconstructions - images) ** 2).flatten(start_dim=1).sum(dim=1)  # (B,)
    return margin.sum(dim=1).mean(dim=0) + reconstruction_weight * recon.mean(dim=0)


def textbook_routing(u_hat: torch.Tensor, iterations: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedure 1 looping over input capsules ``i`` and output capsules ``j``.

    Every operation acts on one ``(i, j)`` pair at a time (a ``(B,)`` logit or a ``(B, D_out)``
    vector), as the procedure reads in the paper. For timing comparisons at small sizes.

    Args:
        u_hat: ``(B, N_in, N_out, D_out)`` prediction vectors.
        iterations: ``R >= 1``.

    Returns:
        ``(v, c)``: ``(B, N_out, D_out)`` outputs and ``(B, N_in, N_out)`` final couplings.
    """
    _, num_in, num_out, _ = u_hat.shape
    b = [[u_hat.new_zeros(u_hat.shape[0]) for _ in range(num_out)] for _ in range(num_in)]  # b[i][j]: (B,)
    for r in range(iterations):
        # Line 4: c_i = softmax_j(b_i), one input capsule at a time.
        c = []
        for i in range(num_in):
            largest = b[i][0]
            for j in range(1, num_out):
                largest = torch.maximum(largest, b[i][j])
            exps = [torch.exp(b[i][j] - largest) for j in range(num_out)]
            total = exps[0]
            for j in range(1, num_out):
                total = total + exps[j]
            c.append([e / total for e in exps])  # c[i][j]: (B,)
        # Lines 5-6: s_j = sum_i c_ij u_hat_j|i, v_j = squash(s_j).
        v = []
        for j in range(num_out):
            s_j = c[0][j][:, None] * u_hat[:, 0, j]  # (B, D_out)
            for i in range(1, num_in):
                s_j = s_j + c[i][j][:, None] * u_hat[:, i, j]
            v.append(plain_squash(s_j))  # (B, D_out)
        # Line 7: b_ij += u_hat_j|i . v_j (skipped after the last iteration: nothing reads it).
        if r + 1 < iterations:
            for i in range(num_in):
                for j in range(num_out):
                    b[i][j] = b[i][j] + (u_hat[:, i, j] * v[j]).sum(dim=1)
    coupling = torch.stack([torch.stack(c_i, dim=1) for c_i in c], dim=1)  # (B, N_in, N_out)
    return torch.stack(v, dim=1), coupling  # (B, N_out, D_out), (B, N_in, N_out)
