"""The CapsNet of Sabour et al. 2017 (Section 4, Fig. 1 and 2), built from capslib's layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from .functional import check_image_range, check_labels, margin_loss, reconstruction_loss
from .layers import Decoder, PrimaryCaps, RoutingCaps
from .routing import RoutingStep, check_iterations, check_routing_implementation

__all__ = ["CapsNet", "CapsuleClassifier", "CapsNetOutput", "Loss"]


@dataclass
class CapsNetOutput:
    """What :class:`CapsNet` returns.

    Attributes:
        lengths: ``(B, N_out)`` digit-capsule lengths: the class scores (no softmax).
        poses: ``(B, N_out, D_out)`` digit capsules ``v``.
        reconstructions: ``(B, C, H, W)`` or None for a model without decoder; ``(B, K, C, H, W)``
            when ``K`` labels per image were passed (MultiMNIST: one reconstruction per digit).
        coupling: ``(B, N_in, N_out)`` coupling coefficients of the last routing iteration.
        trace: with ``return_trace=True``, one :class:`capslib.RoutingStep` per routing
            iteration (``b`` before that iteration's update, ``c``, ``s``, ``v``); else None.
        u_hat: with ``return_trace=True``, the prediction vectors ``(B, N_in, N_out, D_out)``.
    """

    lengths: torch.Tensor
    poses: torch.Tensor
    reconstructions: torch.Tensor | None
    coupling: torch.Tensor
    trace: list[RoutingStep] | None = None
    u_hat: torch.Tensor | None = field(default=None, repr=False)

    @property
    def predictions(self) -> torch.Tensor:
        """``(B,)`` the predicted class: the longest digit capsule."""
        return self.lengths.argmax(dim=1)


class Loss(NamedTuple):
    """A model's training loss on a batch (scalar tensors, batch means): what the optimizer
    minimises, and its two parts as the training logs show them."""

    total: torch.Tensor  # classification + weight x reconstruction: what backward() runs on
    classification: torch.Tensor  # the margin loss of a CapsNet, the cross-entropy of a CNN
    reconstruction: torch.Tensor  # the decoder's squared error; 0 without a decoder


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class CapsuleClassifier(nn.Module):
    """What every capsule classifier of capslib shares, after its primary capsules.

    A subclass builds ``self.image_shape`` ``(C, H, W)``, ``self.num_classes``, ``self.digit_caps``
    (a :class:`capslib.RoutingCaps` with one output capsule per class), ``self.decoder`` (a
    :class:`capslib.Decoder` or None) and ``self.config`` (its constructor arguments, for
    checkpoints), and defines :meth:`primary_capsules`. This class does the rest: the input checks,
    the routing, the lengths as class scores, the decoder masked with the TRUE label while training
    (with the predicted class in eval mode), and the margin loss. :class:`CapsNet` and
    :class:`capslib.EfficientCapsNet` are two such models.
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    digit_caps: RoutingCaps
    decoder: Decoder | None
    config: dict

    def primary_capsules(self, x: torch.Tensor) -> torch.Tensor:
        """The primary capsules ``(B, N_in, D_in)`` of the images ``x`` ``(B, C, H, W)``."""
        raise NotImplementedError

    @property
    def routing(self) -> str:
        """The routing algorithm of the digit capsules (a key of :data:`capslib.ROUTING_ALGORITHMS`)."""
        return self.digit_caps.routing

    @property
    def routing_iterations(self) -> int:
        """Number of routing iterations used by the next forward pass."""
        return self.digit_caps.routing_iterations

    @routing_iterations.setter
    def routing_iterations(self, value: int) -> None:
        self.digit_caps.routing_iterations = check_iterations(value)

    @property
    def routing_implementation(self) -> str:
        """``"auto"``, ``"reference"`` or ``"fused"``: which code routes (see :class:`capslib.RoutingCaps`)."""
        return self.digit_caps.routing_implementation

    @routing_implementation.setter
    def routing_implementation(self, value: str) -> None:
        self.digit_caps.routing_implementation = check_routing_implementation(value)

    loss_name = "margin"  # the classification loss's name in the training logs (history: train_margin_loss)

    @staticmethod
    def loss(
        output: CapsNetOutput, targets: torch.Tensor, labels: torch.Tensor, reconstruction_weight: float = 0.0005
    ) -> Loss:
        """Margin loss (Eq. 4) + ``reconstruction_weight`` x reconstruction loss (Section 4.1), in fp32.

        A static method: any model whose forward returns a :class:`CapsNetOutput` trains with it.

        Args:
            output: what the model returned for the batch: ``lengths`` ``(B, N_out)``,
                ``reconstructions`` ``(B, C, H, W)``, ``(B, K, C, H, W)`` or None (no decoder).
            targets: what the decoder must redraw, the shape of ``reconstructions``: the input
                images ``(B, C, H, W)``, or each digit on its own ``(B, K, C, H, W)`` (MultiMNIST).
            labels: ``(B,)`` true classes, or ``(B, K)`` for ``K`` digits per image.
            reconstruction_weight: the paper's 0.0005, small so the margin loss dominates.
        """
        margin = margin_loss(output.lengths.float(), labels)
        if output.reconstructions is None:
            recon = margin.new_zeros(())
        else:
            recon = reconstruction_loss(output.reconstructions.float(), targets.float())
        return Loss(margin + reconstruction_weight * recon, margin, recon)

    def check_images(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a float batch ``(B, C, H, W)`` of this model's size.

        On the CPU the values are checked too (finite, in [0, 1]: :func:`capslib.functional.check_image_range`),
        where a minimum and maximum cost nothing. On a GPU that would read the batch back, a
        synchronisation in every step, so there only dtype and shape are checked here; data entering
        on a GPU is value-checked once, on the CPU, where it enters (:func:`capslib.evaluation.evaluate`,
        the training data loader).
        """
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"images must have shape (B, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}"
            )
        if not x.dtype.is_floating_point:
            raise ValueError(
                f"images must be floating point in [0, 1], got dtype {x.dtype}; "
                "convert 8-bit pixels with x.float() / 255"
            )
        # Under torch.compile a value check would split the graph; compiled_or_eager checks eagerly first.
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            check_image_range(x)

    def check_inputs(self, x: torch.Tensor, y: torch.Tensor | None = None, *args, **kwargs) -> None:
        """The input checks of :meth:`forward` (``x`` ``(B, C, H, W)``, ``y`` ``(B,)``, ``(B, K)`` or
        None), callable on their own: a compiled model skips the label-range check (it would split
        the graph), so ``compiled_or_eager`` runs this first. Raises ``ValueError``."""
        self.check_images(x)
        if isinstance(y, torch.Tensor) and y.dim() == 2:  # K labels per image (MultiMNIST)
            if y.shape[0] != x.shape[0] or y.shape[1] < 1:
                raise ValueError(f"labels must be (B,) or (B, K) with B = {x.shape[0]}, got {tuple(y.shape)}")
            check_labels(y.flatten(), y.numel(), self.num_classes)
        elif y is not None:
            check_labels(y, x.shape[0], self.num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, return_trace: bool = False) -> CapsNetOutput:
        """Classify (and reconstruct) a batch.

        Args:
            x: ``(B, C, H, W)`` images in [0, 1], of any floating-point dtype: they are cast to the
                model's parameter dtype first (float64 or float16 images into a float32 model just
                work; under autocast the convolution still runs in autocast's dtype). Integer images
                raise ``ValueError``: convert 8-bit pixels with ``x.float() / 255``. On the CPU,
                values outside [0, 1] or not finite raise ``ValueError`` (see :meth:`check_images`).
                ``B = 0`` gives empty outputs of the shapes :class:`CapsNetOutput` lists.
            y: ``(B,)`` true labels; required while training with a decoder. ``(B, K)`` for ``K``
                digits per image (MultiMNIST): the decoder then runs once per digit, masked by that
                digit's label, and ``reconstructions`` is ``(B, K, C, H, W)``.
            return_trace: also return every routing iteration (and ``u_hat``).
        """
        self.check_inputs(x, y)
        # float64/float16 images would meet float32 weights; a no-op when the dtypes agree.
        x = x.to(self.digit_caps.weight.dtype)
        u = self.primary_capsules(x)  # (B, N_in, D_in)
        u_hat, trace = None, None
        if return_trace:  # the reference path, which records every iteration and u_hat
            routed = self.digit_caps(u, return_trace=True)
            v, c, trace, u_hat = routed.v, routed.c, routed.trace, routed.u_hat
        else:
            v, c = self.digit_caps(u)  # (B, N_out, D_out), (B, N_in, N_out)
        lengths = torch.linalg.vector_norm(v, dim=-1)  # (B, N_out)

        reconstructions = None
        if self.decoder is not None:
            if y is None:
                if self.training:
                    raise ValueError(
                        "CapsNet is in training mode and has a decoder: pass the true labels, model(x, y), "
                        "because the decoder must be masked with the true class while training; "
                        "call model.eval() to mask with the predicted class instead"
                    )
                mask_labels = lengths.argmax(dim=1)  # (B,)
            else:
                mask_labels = y
            if mask_labels.dim() == 2:  # one reconstruction per labelled digit, each masked by its label
                per_digit = [self.decoder(v, mask_labels[:, k]) for k in range(mask_labels.shape[1])]
                reconstructions = torch.stack(per_digit, dim=1)  # (B, K, C, H, W)
            else:
                reconstructions = self.decoder(v, mask_labels)  # (B, C, H, W)
        return CapsNetOutput(
            lengths=lengths,
            poses=v,
            reconstructions=reconstructions,
            coupling=c,
            trace=trace,
            u_hat=u_hat,
        )


class CapsNet(CapsuleClassifier):
    """Conv1 -> PrimaryCaps -> DigitCaps (dynamic routing) [-> Decoder].

    Defaults are the paper's MNIST network: Conv1 256 9x9 ReLU ``(B, 256, 20, 20)``;
    PrimaryCaps 32 types of 8D, 9x9 stride 2 ``(B, 1152, 8)``; DigitCaps 10 capsules of 16D
    ``(B, 10, 16)``; Decoder 160 -> 512 -> 1024 -> 784. 8.2M parameters (6.8M without decoder).

    The decoder is masked with the TRUE label ``y`` while training: calling a training-mode model
    that has a decoder without ``y`` raises ``ValueError``. In eval mode it is masked with the
    predicted class unless ``y`` is passed.

    Args:
        routing_iterations: ``R`` (3); a plain attribute, may be changed on a trained model.
        reconstruction: build the decoder (True).
        image_shape: ``(C, H, W)`` of the input images ((1, 28, 28)).
        num_classes: ``N_out`` digit capsules, one per class (10).
        conv_channels: Conv1 filters (256).
        num_types, in_dim: ``T`` primary capsule types and ``D_in``, their dimension (32, 8).
        out_dim: ``D_out`` of the digit capsules (16).
        detach_intermediate: see :func:`capslib.dynamic_routing` (False, as the official code).
        routing_implementation: ``"auto"`` (default), ``"reference"`` or ``"fused"``: which code
            routes, the same numbers either way (see :class:`capslib.RoutingCaps`); a plain
            attribute, not saved in checkpoints.
        routing: the routing algorithm of the digit capsules, a key of
            :data:`capslib.ROUTING_ALGORITHMS` (``"dynamic"``, the paper's).
    """

    def __init__(
        self,
        routing_iterations: int = 3,
        reconstruction: bool = True,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        conv_channels: int = 256,
        num_types: int = 32,
        in_dim: int = 8,
        out_dim: int = 16,
        detach_intermediate: bool = False,
        routing_implementation: str = "auto",
        routing: str = "dynamic",
    ) -> None:
        super().__init__()
        # Constructor arguments, saved in checkpoints so capslib.load_checkpoint can rebuild the model.
        self.config = dict(
            routing=routing,
            routing_iterations=routing_iterations,
            reconstruction=reconstruction,
            image_shape=tuple(image_shape),
            num_classes=num_classes,
            conv_channels=conv_channels,
            num_types=num_types,
            in_dim=in_dim,
            out_dim=out_dim,
            detach_intermediate=detach_intermediate,
        )
        channels, height, width = image_shape
        self.image_shape = (channels, height, width)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(channels, conv_channels, kernel_size=9, stride=1)
        self.primary_caps = PrimaryCaps(conv_channels, num_types, in_dim, kernel_size=9, stride=2)
        grid_h = _conv_out(_conv_out(height, 9, 1), 9, 2)
        grid_w = _conv_out(_conv_out(width, 9, 1), 9, 2)
        if grid_h < 1 or grid_w < 1:
            raise ValueError(
                f"image_shape {image_shape} is too small for two 9x9 convolutions (need at least 17x17 pixels)"
            )
        self.primary_grid = (grid_h, grid_w)
        self.digit_caps = RoutingCaps(
            in_capsules=num_types * grid_h * grid_w,
            in_dim=in_dim,
            out_capsules=num_classes,
            out_dim=out_dim,
            routing_iterations=routing_iterations,
            detach_intermediate=detach_intermediate,
            routing_implementation=routing_implementation,
            routing=routing,
        )
        self.decoder = Decoder(num_classes, out_dim, self.image_shape) if reconstruction else None

    def primary_capsules(self, x: torch.Tensor) -> torch.Tensor:
        """Conv1 + ReLU, then PrimaryCaps: ``(B, 1, 28, 28)`` -> ``(B, 1152, 8)`` for MNIST."""
        features = torch.relu_(self.conv1(x))  # (B, 256, 20, 20); in place: one 41 MB tensor fewer
        return self.primary_caps(features)  # (B, N_in, D_in)
