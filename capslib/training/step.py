"""One training step: forward, the model's own loss, backward, optimizer step; and the step as a run configures it.

The step knows nothing of datasets or logging: it takes a batch and returns detached sums on the
batch's device (reading them would wait for the device: :mod:`capslib.training.hooks` reads them
only when shown or saved).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from ..functional import class_scores, correct_predictions
from ..model import CapsNet, Loss
from .checkpoints import RunState
from .compiling import compiled_or_eager
from .config import TrainConfig
from .distributed import World
from .faults import NonFiniteLossError, reads_are_free

__all__ = ["AMP_DEVICES", "total_loss", "loss_of", "train_step", "make_step"]

# bf16 autocast (--amp) runs where torch autocasts convolutions to bf16; MPS is left in fp32.
AMP_DEVICES = ("cuda", "cpu")


def total_loss(output, images: torch.Tensor, labels: torch.Tensor, reconstruction_weight: float = 0.0005) -> Loss:
    """Margin loss + ``reconstruction_weight`` x reconstruction loss (Section 4.1) of any model whose
    forward returns a :class:`capslib.CapsNetOutput`: :meth:`capslib.CapsNet.loss`.

    Args:
        output: ``lengths`` ``(B, N_out)``, ``reconstructions`` ``(B, C, H, W)`` (or ``(B, K, C, H, W)``) or None.
        images: what the decoder must redraw, the shape of ``reconstructions``.
        labels: ``(B,)`` true classes, or ``(B, K)``.

    Returns:
        ``Loss(total, classification, reconstruction)``: scalar tensors, the classification loss
        the margin loss, the reconstruction loss 0 without a decoder.
    """
    return CapsNet.loss(output, images, labels, reconstruction_weight)


def loss_of(model) -> Callable[..., Loss]:
    """``model.loss`` (a CapsNet's margin loss, a CNN's cross-entropy), or :func:`total_loss` for a
    capslib-style model without one (its forward returns a :class:`capslib.CapsNetOutput`)."""
    return getattr(model, "loss", total_loss)


def train_step(
    model,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    reconstruction_weight: float = 0.0005,
    micro_batch: int | None = None,
    amp: bool = False,
    targets: torch.Tensor | None = None,
    loss: Callable[..., Loss] | None = None,
) -> dict:
    """One optimizer step on a batch: forward, the model's loss, backward, step.

    With ``micro_batch``, forward and backward run on slices of that many images and their
    gradients are summed, each slice's loss weighted by its share of the batch: the gradient is
    the batch mean's, as without slicing (to float tolerance), for any model whose examples do not
    interact (no batch norm). Under ``DistributedDataParallel`` only the last slice's backward
    averages the gradients over the processes (``no_sync`` on the others): one all-reduce a step.

    Args:
        model: ``model(x, y)`` returns what ``loss`` takes (a :class:`capslib.CapsNetOutput`, logits).
        images: ``(B, C, H, W)``; labels: ``(B,)``, or ``(B, K)`` for ``K`` digits per image (MultiMNIST).
        amp: bf16 autocast on the images' device (CUDA or CPU); routing, squash and the losses stay fp32.
        targets: what the decoder must redraw: None for the images themselves; ``(B, K, C, H, W)``,
            each digit on its own, with ``(B, K)`` labels.
        loss: ``loss(output, targets, labels, reconstruction_weight)`` -> :class:`capslib.model.Loss`;
            None: :func:`loss_of` ``model``.

    Returns:
        ``loss``, ``classification``, ``reconstruction`` (batch means) and ``correct`` (count),
        detached tensors on the batch's device: reading them does not wait for the device.

    Raises:
        NonFiniteLossError: on the CPU, for a NaN or infinite loss, before the step (which would make
            every weight NaN). Elsewhere the check would wait for the device: fit does it at read-backs.
    """
    if micro_batch is not None and micro_batch < 1:
        raise ValueError(f"micro_batch must be None or >= 1, got {micro_batch}")
    loss = loss or loss_of(model)
    batch = len(labels)
    size = micro_batch or batch
    optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(4, device=labels.device)  # loss, classification, reconstruction (batch means), correct
    wanted = (images if targets is None else targets).split(size)  # what each slice's decoder must redraw
    chunks = list(zip(images.split(size), labels.split(size), wanted, strict=True))  # ((b, C, H, W), (b,), ...)
    for i, (x, y, t) in enumerate(chunks):
        last = i == len(chunks) - 1
        with model.no_sync() if not last and hasattr(model, "no_sync") else nullcontext():
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
                output = model(x, y)  # decoder masked with the TRUE label
            losses = loss(output, t, y, reconstruction_weight)
            share = len(y) / batch
            (losses.total * share if share != 1 else losses.total).backward()
        with torch.no_grad():
            correct = correct_predictions(class_scores(output), y).sum()
            sums += torch.stack([part * share for part in losses] + [correct.float()])
    if reads_are_free(sums) and not torch.isfinite(sums[:3]).all():
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"non-finite loss {sums[0].item()}: the step was skipped, the weights are unchanged")
    optimizer.step()
    total, classification, reconstruction, correct = sums.unbind()
    return {"loss": total, "classification": classification, "reconstruction": reconstruction, "correct": correct}


def make_step(run: RunState, config: TrainConfig, device: torch.device, world: World) -> Callable[..., dict]:
    """``step(images, labels, targets=None)``: :func:`train_step` with the run's settings (compiled,
    micro-batched, autocast; under torchrun through ``DistributedDataParallel``) and ``run.model``'s loss."""
    if world.distributed:  # averages the gradients over the processes; shares run.model's parameters
        step_model = DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        step_model = compiled_or_eager(run.model, enabled=config.compile)  # shares run.model's parameters
    return functools.partial(
        train_step,
        step_model,
        run.optimizer,
        reconstruction_weight=config.reconstruction_weight,
        micro_batch=config.micro_batch,
        amp=config.amp and device.type in AMP_DEVICES,
        loss=loss_of(run.model),
    )
