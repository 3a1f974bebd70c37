"""The plain implementation that ``benchmarks/perf.py`` times capslib against.

* :class:`PlainCapsNet`: a plain vectorised implementation: one einsum for the
  predictions ``u_hat``, one Python loop over the routing iterations, nothing else clever. It is
  written independently of capslib but keeps capslib's parameter names and shapes, so
  ``PlainCapsNet().load_state_dict(capslib.CapsNet().state_dict())`` works and both models
  compute the same thing from the same weights (``tests/test_benchmarks.py`` checks it).
  :func:`plain_loss` is its margin + reconstruction loss.

The loop-by-loop transcription of Procedure 1 that perf.py's routing-alone section times is
``tests/reference.py``, the same one the tests check capslib against.

Shapes use capslib's vocabulary: ``B`` batch, ``N_in``/``N_out`` capsules in/out,
``D_in``/``D_out`` capsule dimensions, ``R`` routing iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PlainCapsNet", "PlainOutput", "plain_loss", "plain_squash"]


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

    def __init__(self, in_capsules: int, out_capsules: int, out_dim: int, in_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(0.01 * torch.randn(in_capsules, out_capsules, out_dim, in_dim))


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
        num_classes, out_dim: ``N_out`` and ``D_out`` (10, 16).
        num_types, in_dim: ``T`` capsule types and ``D_in`` (32, 8).

    Shapes:
        ``x`` ``(B, C, H, W)``, ``y`` ``(B,)`` -> :class:`PlainOutput`.
    """

    def __init__(
        self,
        routing_iterations: int = 3,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        out_dim: int = 16,
        num_types: int = 32,
        in_dim: int = 8,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.routing_iterations = routing_iterations
        self.image_shape = tuple(image_shape)
        self.num_types, self.in_dim = num_types, in_dim
        grid = ((height - 8) - 9) // 2 + 1, ((width - 8) - 9) // 2 + 1  # after the two 9x9 convolutions
        num_in = num_types * grid[0] * grid[1]
        self.conv1 = nn.Conv2d(channels, 256, kernel_size=9)
        self.primary_caps = _PrimaryCapsParams(256, num_types * in_dim)
        self.digit_caps = _DigitCapsParams(num_in, num_classes, out_dim, in_dim)
        self.decoder = _DecoderParams(num_classes * out_dim, channels * height * width)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> PlainOutput:
        batch = x.shape[0]
        h = torch.relu(self.conv1(x))  # (B, 256, 20, 20)
        h = self.primary_caps.inner(h)  # (B, T*D_in, 6, 6)
        h = h.view(batch, self.num_types, self.in_dim, -1)  # (B, T, D_in, 36)
        u = plain_squash(h.transpose(2, 3).reshape(batch, -1, self.in_dim))  # (B, N_in, D_in)

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
