"""The one batched prediction loop: a model over many images, in eval mode, without gradients.

Every caller that scores a model on a set of images (test accuracy, validation accuracy,
robustness curves, the MultiMNIST study) goes through :func:`predict`, so eval mode, ``no_grad``,
the device transfer and the progress bar are written once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..functional import class_scores, correct_predictions
from ..utils import eval_mode

__all__ = ["predict", "accuracy"]


def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 500,
    output: Callable = class_scores,
    device: torch.device | None = None,
    progress: bool = False,
    description: str = "predicting",
) -> torch.Tensor:
    """``output(model(x))`` for every batch of ``images``, concatenated on the CPU.

    The model runs in eval mode without gradients and goes back to the mode it was in.

    Args:
        images: ``(N, C, H, W)`` on any device; each batch moves to ``device``.
        batch_size: images per forward pass (does not change the result).
        output: what to keep of each batch's output: a function of the model's output (and only
            of it) returning a tensor whose first dimension is the batch. Default: the class
            scores ``(B, N_out)`` (capsule lengths, or a CNN's logits).
        device: default: the device of the model's first parameter.
        progress: a tqdm bar over the batches.

    Returns:
        The kept tensors, concatenated along the first dimension: ``(N, ...)`` on the CPU, fp32
        where the model computed in a lower precision.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        device = next(model.parameters()).device
    kept = []
    starts = range(0, len(images), batch_size)
    with eval_mode(model), torch.no_grad():
        for start in tqdm(starts, desc=description, disable=not progress, leave=False):
            x = images[start : start + batch_size].to(device)  # (B, C, H, W)
            kept.append(_to_cpu(output(model(x))))
    if not kept:
        raise ValueError("predict got no images: a prediction over nothing is undefined")
    return torch.cat(kept)


def _to_cpu(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    return (value.float() if value.is_floating_point() else value).cpu()


def accuracy(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500, **options
) -> float:
    """Fraction correct over ALL of ``images`` ``(N, C, H, W)`` (eval mode, no augmentation).

    ``labels``: ``(N,)`` classes, or ``(N, K)`` for ``K`` digits per image (MultiMNIST), where an
    image counts as correct when all ``K`` are right (:func:`capslib.functional.correct_predictions`).
    """
    scores = predict(model, images, batch_size, **options)  # (N, N_out)
    return correct_predictions(scores, labels.cpu()).float().mean().item()
