"""Baseline CNNs to compare CapsNet with (Sabour et al. 2017, Section 5 and Table 1).

The paper's baseline: "three convolutional layers of 256, 256, 128 channels. Each has 5x5 kernels
and stride of 1. The last convolutional layers are followed by two fully connected layers of size
328, 192. The last fully connected layer is connected with dropout to a 10 class softmax layer
with cross entropy loss", 35.4M parameters. The text names no pooling and no padding; the count
says which: with ``"same"`` padding (2 pixels) and no pooling the first fully connected layer sees
128 x 28 x 28 = 100,352 features and the model has 35,445,522 parameters, the paper's 35.4M (with
``"valid"`` padding it would have 13.3M). :data:`PAPER_BASELINE` is that model. Its first fully
connected layer holds 93% of the weights, and its convolutions at full 28x28 resolution cost about
2.0 GMAC per image, ten times CapsNet's 0.2: practical on a GPU, slow on a CPU.

(The authors' released code trains a different baseline: two 5x5 convolutions of 512 and 256
channels, each followed by 2x2 max-pooling, and one hidden layer of 1024.)

:data:`SMALL_BASELINE` is the same design made cheap: narrower convolutions with 2x2 max-pooling
after each (28 -> 14 -> 7 -> 3 px), 1,059,602 parameters and about 0.06 GMAC per image, for CPU budgets
and for shipping.

Both return LOGITS ``(B, N_out)`` and train with cross-entropy (:meth:`BaselineCNN.loss`).
``forward(x, y)`` accepts the labels so the same training loop
drives CapsNet and the baselines; a CNN has nothing to mask and ignores them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .functional import check_labels
from .model import Loss

__all__ = ["BaselineCNN", "PAPER_BASELINE", "SMALL_BASELINE", "BASELINES", "MODEL_NAMES", "baseline_cnn"]

PAPER_BASELINE = dict(channels=(256, 256, 128), hidden=(328, 192), kernel_size=5, pool=False, dropout=0.5)
"""The paper's baseline CNN (Section 5): 35,445,522 parameters at 28x28."""

SMALL_BASELINE = dict(channels=(64, 128, 128), hidden=(328, 192), kernel_size=5, pool=True, dropout=0.5)
"""The paper's design with fewer channels and 2x2 max-pooling after each convolution: 1,059,602 parameters."""

BASELINES = {"cnn-baseline": PAPER_BASELINE, "cnn-small": SMALL_BASELINE}
"""Model names (``python -m capslib.train --model NAME``) and the :class:`BaselineCNN` they build."""

MODEL_NAMES = ("capsnet", "efficient-capsnet", *BASELINES)
"""Every model ``python -m capslib.train --model`` builds: CapsNet, Efficient-CapsNet and the baselines."""


class BaselineCNN(nn.Module):
    """Convolutions (5x5, stride 1, ``"same"`` padding, ReLU, optional 2x2 max-pooling), then
    fully connected ReLU layers, dropout, and a linear layer to the class logits.

    Args:
        image_shape: ``(C, H, W)`` of the inputs (1, 28, 28 for MNIST).
        num_classes: ``N_out`` logits.
        channels: output channels of each convolution.
        hidden: sizes of the fully connected hidden layers.
        kernel_size: an odd square kernel size (padding keeps the size: ``kernel_size // 2``).
        pool: 2x2 max-pooling (stride 2) after every convolution.
        dropout: dropout probability before the last layer (the paper's "connected with dropout").
    """

    loss_name = "cross_entropy"  # the classification loss's name in the training logs (train_cross_entropy_loss)

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] = PAPER_BASELINE["channels"],
        hidden: Sequence[int] = PAPER_BASELINE["hidden"],
        kernel_size: int = 5,
        pool: bool = False,
        dropout: float = 0.5,
    ):
        super().__init__()
        image_shape, channels, hidden = tuple(image_shape), tuple(channels), tuple(hidden)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
        if not channels or min(channels) < 1 or min(hidden, default=1) < 1 or num_classes < 2:
            raise ValueError(
                f"channels and hidden must be positive sizes (at least one convolution) and num_classes >= 2, "
                f"got channels={channels}, hidden={hidden}, num_classes={num_classes}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (so 'same' padding is symmetric), got {kernel_size}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        height, width = image_shape[1:]
        if pool and min(height, width) < 2 ** len(channels):
            need = 2 ** len(channels)
            raise ValueError(f"{len(channels)} 2x2 poolings need images of at least {need} px, got {height}x{width}")
        self.config = dict(
            model=_name_of(channels, hidden, kernel_size, pool, dropout),
            image_shape=image_shape,
            num_classes=num_classes,
            channels=channels,
            hidden=hidden,
            kernel_size=kernel_size,
            pool=pool,
            dropout=dropout,
        )
        self.image_shape = image_shape
        self.num_classes = num_classes

        layers: list[nn.Module] = []
        in_channels = image_shape[0]
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))  # floor: 28 -> 14 -> 7 -> 3
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.features = nn.Sequential(*layers)  # (B, C, H, W) -> (B, channels[-1], h, w)
        sizes = (in_channels * height * width, *hidden)
        fully_connected: list[nn.Module] = []
        for n_in, n_out in zip(sizes, sizes[1:], strict=False):
            fully_connected += [nn.Linear(n_in, n_out), nn.ReLU()]
        fully_connected += [nn.Dropout(dropout), nn.Linear(sizes[-1], num_classes)]
        self.classifier = nn.Sequential(*fully_connected)  # (B, features) -> (B, N_out)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, reconstruction_weight: float = 0.0
    ) -> Loss:
        """Cross-entropy of ``logits`` ``(B, N_out)`` against ``labels`` ``(B,)``, in fp32 (the paper's
        baseline loss). A CNN redraws nothing: ``targets`` and ``reconstruction_weight`` are taken for
        the training loop's one call form and unused, and the reconstruction part is 0."""
        cross_entropy = nn.functional.cross_entropy(logits.float(), labels)
        return Loss(cross_entropy, cross_entropy, cross_entropy.new_zeros(()))

    def check_images(self, x: torch.Tensor) -> None:
        """``ValueError`` unless ``x`` is a floating ``(B, C, H, W)`` batch of this model's image shape."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"images must have shape (B, {', '.join(map(str, self.image_shape))}), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got {x.dtype}: convert with x.float() / 255")

    def check_inputs(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The image checks, and for labels their dtype, shape and (on the CPU) range."""
        self.check_images(x)
        if y is not None:
            check_labels(y, x.shape[0], self.num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits.

        Args:
            x: ``(B, C, H, W)`` images in [0, 1].
            y: ``(B,)`` labels, checked and otherwise unused (the training loop passes them).

        Returns:
            ``(B, N_out)`` logits (not probabilities: cross-entropy applies the softmax).
        """
        self.check_inputs(x, y)
        x = x.to(self.classifier[-1].weight.dtype)
        features = self.features(x)  # (B, channels[-1], h, w)
        return self.classifier(features.flatten(start_dim=1))  # (B, N_out)


def _name_of(channels, hidden, kernel_size, pool, dropout) -> str:
    """The :data:`BASELINES` name of this configuration, or ``"cnn"`` for another one."""
    mine = dict(channels=tuple(channels), hidden=tuple(hidden), kernel_size=kernel_size, pool=pool, dropout=dropout)
    return next((name for name, preset in BASELINES.items() if preset == mine), "cnn")


def baseline_cnn(name: str = "cnn-baseline", **overrides) -> BaselineCNN:
    """The baseline called ``name`` in :data:`BASELINES` (``overrides`` replace its arguments)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    return BaselineCNN(**{**BASELINES[name], **overrides})
