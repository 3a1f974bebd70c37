"""Efficient-CapsNet (Mazzia, Salvetti & Chiaberge 2021, Scientific Reports 11:14634), built from
capslib's layers: a capsule network small enough to train to convergence on a CPU.

For MNIST (the authors' ``efficient_capsnet_graph_mnist.py``)::

    (B, 1, 28, 28)
    -> Conv 32 5x5, ReLU, BatchNorm   (B, 32, 24, 24)
    -> Conv 64 3x3, ReLU, BatchNorm   (B, 64, 22, 22)
    -> Conv 64 3x3, ReLU, BatchNorm   (B, 64, 20, 20)
    -> Conv 128 3x3 stride 2, ReLU, BatchNorm  (B, 128, 9, 9)
    -> PrimaryCaps: a depthwise 9x9 convolution (one filter per channel) -> (B, 128, 1, 1),
       read as 16 capsules of 8 components, squashed      (B, 16, 8)
    -> RoutingCaps: 10 capsules of 16, self-attention routing  (B, 10, 16)
    [-> Decoder 160 -> 512 -> 1024 -> 784]

161,824 trainable parameters without the decoder, the paper's count. The routing is a constructor
argument: any key of :data:`capslib.ROUTING_ALGORITHMS` (``"self_attention"`` by default, as in
the paper), so the same network compares routing algorithms. The primary capsules use
Efficient-CapsNet's squash, ``(1 - e^{-|s|}) s / |s|``; the digit capsules the squash of their
routing algorithm (that one for self-attention, Eq. 1 of Sabour et al. for dynamic routing).
Differences from the authors' Keras code, kept small on purpose: PyTorch's BatchNorm defaults
(momentum 0.1, eps 1e-5; Keras: 0.01 and 1e-3) and PyTorch's default initialisation of the
convolutions (Keras: He normal). The transforms ``W`` are drawn with He's standard deviation
``sqrt(2 / (N_out * N_in * D_in))``, as Keras computes it for that tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .functional import check_iterations
from .layers import Decoder, PrimaryCaps, RoutingCaps
from .model import CapsuleClassifier
from .routing_algorithms import check_routing_algorithm

__all__ = ["EfficientCapsNet", "ITERATIVE_ROUTINGS"]

ITERATIVE_ROUTINGS = ("dynamic", "em")
"""The routing algorithms that iterate: 3 iterations by default; the others run once."""


def _conv_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Convolution (no padding), ReLU, then BatchNorm, in the authors' order."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_channels),
    )


class EfficientCapsNet(CapsuleClassifier):
    """Efficient-CapsNet for 28x28 single-channel images (MNIST, Fashion-MNIST).

    Args:
        routing: the routing algorithm of the digit capsules (``"self_attention"``).
        routing_iterations: ``R``; None: 3 for the iterative algorithms (``"dynamic"``, ``"em"``),
            1 for the others.
        reconstruction: build the decoder (True).
        image_shape: ``(C, H, W)`` ((1, 28, 28)); the convolutions must reduce it to 9x9 before the
            9x9 depthwise convolution, so only 28x28 works with the default layers.
        num_classes: ``N_out`` (10).
        num_types, in_dim: the primary capsules, ``N_in`` of dimension ``D_in`` (16, 8); their
            product is the channel count of the last convolution (128).
        out_dim: ``D_out`` (16).
        routing_implementation: as for :class:`capslib.CapsNet` (dynamic routing only).

    Shapes:
        ``forward(x)`` ``(B, C, H, W)`` -> :class:`capslib.CapsNetOutput` (``lengths`` ``(B, 10)``,
        ``poses`` ``(B, 10, 16)``, ``coupling`` ``(B, 16, 10)``).
    """

    def __init__(
        self,
        routing: str = "self_attention",
        routing_iterations: int | None = None,
        reconstruction: bool = True,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        num_types: int = 16,
        in_dim: int = 8,
        out_dim: int = 16,
        routing_implementation: str = "auto",
    ) -> None:
        super().__init__()
        routing = check_routing_algorithm(routing)
        if routing_iterations is None:
            routing_iterations = 3 if routing in ITERATIVE_ROUTINGS else 1
        routing_iterations = check_iterations(routing_iterations)
        channels, height, width = image_shape
        if (height, width) != (28, 28):
            raise ValueError(f"EfficientCapsNet's layers take 28x28 images, got image_shape {tuple(image_shape)}")
        self.config = dict(
            model="efficient-capsnet",
            routing=routing,
            routing_iterations=routing_iterations,
            reconstruction=reconstruction,
            image_shape=tuple(image_shape),
            num_classes=num_classes,
            num_types=num_types,
            in_dim=in_dim,
            out_dim=out_dim,
        )
        self.image_shape = (channels, height, width)
        self.num_classes = num_classes
        features = num_types * in_dim  # 128 channels, one depthwise 9x9 filter each
        self.features = nn.Sequential(
            _conv_block(channels, 32, 5),  # (B, 32, 24, 24)
            _conv_block(32, 64, 3),  # (B, 64, 22, 22)
            _conv_block(64, 64, 3),  # (B, 64, 20, 20)
            _conv_block(64, features, 3, stride=2),  # (B, 128, 9, 9)
        )
        depthwise = nn.Conv2d(features, features, kernel_size=9, groups=features)  # (B, 128, 1, 1)
        self.primary_caps = PrimaryCaps(num_types=num_types, in_dim=in_dim, inner=depthwise, squash="efficient")
        self.digit_caps = RoutingCaps(
            in_capsules=num_types,
            in_dim=in_dim,
            out_capsules=num_classes,
            out_dim=out_dim,
            routing_iterations=routing_iterations,
            routing_implementation=routing_implementation,
            routing=routing,
            weight_std=math.sqrt(2.0 / (num_classes * num_types * in_dim)),
        )
        self.decoder = Decoder(num_classes, out_dim, self.image_shape) if reconstruction else None

    def primary_capsules(self, x: torch.Tensor) -> torch.Tensor:
        """Four convolutions, then the depthwise one read as capsules: ``(B, 1, 28, 28)`` -> ``(B, 16, 8)``."""
        return self.primary_caps(self.features(x))  # (B, N_in, D_in)

    def extra_repr(self) -> str:
        return f"routing={self.routing!r}, routing_iterations={self.routing_iterations}"
