"""Capsule layers: primary capsules, a routing layer between capsule layers, and the decoder.

Each layer can be used on its own to build other capsule networks (see notebook 08).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .functional import autocast_enabled, check_iterations, check_labels, efficient_squash, squash
from .routing import ROUTING_IMPLEMENTATIONS, RoutingResult, check_routing_implementation, prediction_vectors
from .routing_algorithms import ROUTING_ALGORITHMS, SQUASHES, check_routing_algorithm

__all__ = ["PrimaryCaps", "RoutingCaps", "Decoder"]


class PrimaryCaps(nn.Module):
    """Turn a feature map into squashed capsule vectors.

    An inner network maps the features ``(B, C, H, W)`` to ``num_types * in_dim`` channels
    ``(B, T*D_in, H', W')``. By default it is the paper's 9x9 stride-2 convolution; pass any module
    as ``inner`` to use another (it must output exactly ``num_types * in_dim`` channels).

    Capsule layout (the notebooks draw capsules on the ``H' x W'`` grid with it):

    * channel ``t * in_dim + d`` of the inner network's output is component ``d`` of
      capsule type ``t`` (each type owns ``in_dim`` consecutive channels);
    * one capsule is the ``in_dim`` channels of one type at ONE spatial position;
    * capsules are ordered type-major: capsule ``n = t * (H' * W') + row * W' + col``.

    For MNIST: 32 types on a 6x6 grid, ``N_in = 1152``, capsule 0 is type 0 at (0, 0),
    capsule 36 is type 1 at (0, 0).

    Args:
        in_channels: ``C`` of the feature map (256 for MNIST); used by the default inner net.
        num_types: ``T`` capsule types (32).
        in_dim: ``D_in``, the components of each capsule it makes (8): these are the input
            capsules of the routing layer that follows.
        kernel_size, stride: of the default convolution (9, 2).
        inner: optional module replacing the default convolution.
        squash: ``"sabour"`` (Eq. 1, default) or ``"efficient"`` (Efficient-CapsNet's).

    Shapes:
        input ``(B, C, H, W)`` -> output ``(B, T * H' * W', D_in)``.
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_types: int = 32,
        in_dim: int = 8,
        kernel_size: int = 9,
        stride: int = 2,
        inner: nn.Module | None = None,
        squash: str = "sabour",
    ) -> None:
        super().__init__()
        if squash not in SQUASHES:
            raise ValueError(f"squash must be one of {list(SQUASHES)}, got {squash!r}")
        self.num_types = num_types
        self.in_dim = in_dim
        self.squash = squash
        if inner is None:
            inner = nn.Conv2d(in_channels, num_types * in_dim, kernel_size=kernel_size, stride=stride)
        self.inner = inner

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4:
            raise ValueError(f"PrimaryCaps expects features of shape (B, C, H, W), got {tuple(features.shape)}")
        out = self.inner(features)  # (B, T*D_in, H', W')
        expected = self.num_types * self.in_dim
        if out.dim() != 4 or out.shape[1] != expected:
            raise ValueError(
                f"the inner network must output (B, {expected}, H', W') = num_types*in_dim channels, "
                f"got {tuple(out.shape)}"
            )
        batch_size, _, height, width = out.shape
        out = out.reshape(batch_size, self.num_types, self.in_dim, height, width)  # (B, T, D, H', W')
        out = out.permute(0, 1, 3, 4, 2)  # (B, T, H', W', D)
        u = out.reshape(batch_size, self.num_types * height * width, self.in_dim)  # (B, N_in, D_in)
        return squash(u, dim=-1) if self.squash == "sabour" else efficient_squash(u, dim=-1)


class RoutingCaps(nn.Module):
    """A capsule layer fed by routing, usable between any two capsule layers.

    Holds one transform ``W_ij`` (``D_out x D_in``) per pair of input capsule ``i`` and output
    capsule ``j``: ``weight`` has shape ``(N_in, N_out, D_out, D_in)`` (frozen state-dict layout).
    Forward computes the prediction vectors ``u_hat_{j|i} = W_ij u_i`` (Eq. 2), then routes them
    with the algorithm ``routing`` names in :data:`capslib.ROUTING_ALGORITHMS`: ``"dynamic"``
    (Procedure 1, the default), ``"uniform"``, ``"self_attention"`` or ``"em"``. The learned
    parameters an algorithm needs belong to the layer: ``log_prior`` ``(N_in, N_out)`` for
    self-attention (Efficient-CapsNet's ``B``, zeros at first), ``beta_u`` and ``beta_a``
    ``(N_out,)`` for EM (zeros at first). EM gets the input capsules' lengths as their activations
    and ``em_inverse_temperature`` (0.01: with hundreds of inputs a larger one saturates the
    logistic from the first step) as ``lambda``.

    Dynamic routing itself is the entry ``routing_implementation`` of the routing table
    :data:`capslib.routing.ROUTING_IMPLEMENTATIONS` (like transformers' ``attn_implementation``):

    * ``"reference"``: :meth:`prediction_vectors`, then :func:`capslib.dynamic_routing`, the readable
      code the notebooks teach, line by line beside the paper;
    * ``"fused"``: :func:`capslib.fused_routing.routed_capsules`, the same maths in one autograd
      function with a hand-written backward, an optimisation tested equal to the reference;
      asked for a trace, it warns and the reference runs;
    * ``"auto"`` (default): :func:`capslib.routing.resolve_routing_implementation` (fused on the
      CPU; the reference for a trace).

    Under autocast the routing runs in float32 and ``v`` and ``c`` are float32.

    Args:
        in_capsules, in_dim: ``N_in`` and ``D_in`` (1152 and 8 for MNIST).
        out_capsules, out_dim: ``N_out`` and ``D_out`` (10 and 16).
        routing_iterations: ``R``; a plain attribute that may be changed after training.
        detach_intermediate: see :func:`capslib.dynamic_routing`.
        routing_implementation: ``"auto"``, ``"reference"`` or ``"fused"``; a plain attribute
            (dynamic routing only: the other algorithms have one implementation each).
        routing: the routing algorithm (``"dynamic"``); fixed at construction, since the
            algorithm decides which parameters the layer has.
        weight_std: the standard deviation of the initial ``W`` (0.01: short first predictions,
            so dynamic routing starts near-uniform).
        em_inverse_temperature: EM's ``lambda``, a number or one per iteration.

    Shapes:
        input ``u`` ``(B, N_in, D_in)`` -> ``v`` ``(B, N_out, D_out)`` and ``c`` ``(B, N_in, N_out)``.
    """

    def __init__(
        self,
        in_capsules: int = 1152,
        in_dim: int = 8,
        out_capsules: int = 10,
        out_dim: int = 16,
        routing_iterations: int = 3,
        detach_intermediate: bool = False,
        routing_implementation: str = "auto",
        routing: str = "dynamic",
        weight_std: float = 0.01,
        em_inverse_temperature: float | Sequence[float] = 0.01,
    ) -> None:
        super().__init__()
        self.in_capsules, self.in_dim = in_capsules, in_dim
        self.out_capsules, self.out_dim = out_capsules, out_dim
        self.routing_iterations = check_iterations(routing_iterations)
        self.detach_intermediate = detach_intermediate
        self.routing_implementation = check_routing_implementation(routing_implementation)
        self._routing = check_routing_algorithm(routing)
        self.em_inverse_temperature = em_inverse_temperature
        # Small init keeps the first predictions short, so dynamic routing starts near-uniform.
        self.weight = nn.Parameter(weight_std * torch.randn(in_capsules, out_capsules, out_dim, in_dim))
        if routing == "self_attention":
            self.log_prior = nn.Parameter(torch.zeros(in_capsules, out_capsules))  # B, added after the softmax
        elif routing == "em":
            self.beta_u = nn.Parameter(torch.zeros(out_capsules))
            self.beta_a = nn.Parameter(torch.zeros(out_capsules))

    @property
    def routing(self) -> str:
        """The routing algorithm (a key of :data:`capslib.ROUTING_ALGORITHMS`), fixed at construction."""
        return self._routing

    def routing_options(self, u: torch.Tensor) -> dict:
        """The keyword options this layer passes to its routing algorithm for input capsules ``u``."""
        if self._routing == "dynamic":
            return {"detach_intermediate": self.detach_intermediate}
        if self._routing == "self_attention":
            return {"prior": self.log_prior}
        if self._routing == "em":
            return {
                "activations": torch.linalg.vector_norm(u.float(), dim=-1),  # (B, N_in): length = presence
                "beta_u": self.beta_u,
                "beta_a": self.beta_a,
                "inverse_temperature": self.em_inverse_temperature,
            }
        return {}

    def check_input(self, u: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``u`` is ``(B, N_in, D_in)`` for this layer."""
        if u.dim() != 3 or u.shape[1:] != (self.in_capsules, self.in_dim):
            raise ValueError(
                f"RoutingCaps expects input capsules of shape (B, {self.in_capsules}, {self.in_dim}), "
                f"got {tuple(u.shape)}"
            )

    def prediction_vectors(self, u: torch.Tensor) -> torch.Tensor:
        """The prediction vectors ``u_hat = W u`` (Eq. 2): ``(B, N_in, D_in)`` -> ``(B, N_in, N_out, D_out)``."""
        self.check_input(u)
        return prediction_vectors(u, self.weight)  # (B, N_in, N_out, D_out)

    def forward(self, u: torch.Tensor, return_trace: bool = False) -> tuple[torch.Tensor, torch.Tensor] | RoutingResult:
        """Route ``u`` ``(B, N_in, D_in)``; returns ``(v, c)``, or with ``return_trace`` a
        :class:`capslib.RoutingResult` (which also holds ``u_hat``)."""
        self.check_input(u)
        if self._routing != "dynamic":  # the readable algorithm is its only implementation
            if autocast_enabled(u.device.type):  # in float32, as dynamic routing under autocast
                with torch.autocast(u.device.type, enabled=False):
                    return self.forward(u.float(), return_trace)
            u_hat = prediction_vectors(u, self.weight)  # (B, N_in, N_out, D_out)
            route_with = ROUTING_ALGORITHMS[self._routing]
            return route_with(u_hat, self.routing_iterations, return_trace=return_trace, **self.routing_options(u))
        route = ROUTING_IMPLEMENTATIONS[check_routing_implementation(self.routing_implementation)]
        routed = route(
            u,
            self.weight,
            self.routing_iterations,
            detach_intermediate=self.detach_intermediate,
            trace=return_trace,
        )
        return routed if return_trace else (routed.v, routed.c)

    def extra_repr(self) -> str:
        return (
            f"in=({self.in_capsules}, {self.in_dim}), out=({self.out_capsules}, {self.out_dim}), "
            f"routing={self._routing!r}, routing_iterations={self.routing_iterations}, "
            f"detach_intermediate={self.detach_intermediate}, routing_implementation={self.routing_implementation!r}"
        )


class Decoder(nn.Module):
    """Reconstruct the image from ONE output capsule (the others masked to zero).

    ``(B, N_out, D_out)`` -> mask -> ``(B, N_out * D_out)`` -> 512 -> 1024 -> ``C*H*W``, sigmoid.

    Args:
        out_capsules, out_dim: ``N_out`` and ``D_out`` (10, 16), the routing layer's output capsules.
        image_shape: ``(C, H, W)`` of the reconstruction ((1, 28, 28)).
        hidden: widths of the hidden layers ((512, 1024)).
    """

    def __init__(
        self,
        out_capsules: int = 10,
        out_dim: int = 16,
        image_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (512, 1024),
    ) -> None:
        super().__init__()
        self.out_capsules, self.out_dim = out_capsules, out_dim
        self.image_shape = tuple(image_shape)
        widths = [out_capsules * out_dim, *hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.ReLU(inplace=True)]
        out_features = 1
        for size in self.image_shape:
            out_features *= size
        layers += [nn.Linear(widths[-1], out_features), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, poses: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Reconstruct from the capsule ``labels[b]`` of each example.

        Args:
            poses: ``(B, N_out, D_out)`` output capsules.
            labels: ``(B,)`` which capsule to keep (the true label while training).

        Returns:
            ``(B, C, H, W)`` reconstructions in [0, 1].
        """
        if poses.dim() != 3 or poses.shape[1:] != (self.out_capsules, self.out_dim):
            raise ValueError(
                f"Decoder expects poses of shape (B, {self.out_capsules}, {self.out_dim}), got {tuple(poses.shape)}"
            )
        check_labels(labels, poses.shape[0], self.out_capsules)
        mask = torch.nn.functional.one_hot(labels.long(), self.out_capsules).to(poses.dtype)  # (B, N_out)
        masked = (poses * mask.unsqueeze(-1)).flatten(start_dim=1)  # (B, N_out * D_out)
        return self.net(masked).view(poses.shape[0], *self.image_shape)  # (B, C, H, W)
