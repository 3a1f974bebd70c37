"""Honest evaluation: accuracy on the FULL test set (10,000 MNIST images, or 10,000 MultiMNIST
pairs), never augmented, through the one batched prediction loop (:func:`capslib.evaluation.predict.predict`).

The command line, ``python -m capslib.evaluate``, is :mod:`capslib.evaluation.cli`; the model
cards it writes are :mod:`capslib.evaluation.cards`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.datasets import load_dataset, to_tensors
from ..data.multimnist import at_least_one_right, both_right, multimnist_test_set
from ..functional import check_image_range, check_label_range
from ..utils import get_device
from .predict import predict

__all__ = ["Evaluation", "evaluate", "MultiEvaluation", "evaluate_multimnist", "TEST_SLICE"]

TEST_SLICE = 2000
"""The fixed test slice (the first 2,000 test images) whose error count the model card records."""


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
        accuracy: fraction correct over all ``total`` images.
        errors: number of misclassified images.
        total: number of images evaluated (10,000 for the MNIST test set).
        per_class_accuracy: ``(N_out,)`` recall of each class.
        confusion: ``(N_out, N_out)`` counts, rows = true class, columns = predicted.
        predictions, labels: ``(total,)`` predicted and true classes.
        lengths: ``(total, N_out)`` capsule lengths (a baseline CNN's logits: :func:`capslib.functional.class_scores`).
    """

    accuracy: float
    errors: int
    total: int
    per_class_accuracy: torch.Tensor
    confusion: torch.Tensor
    predictions: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor

    def summary(self) -> str:
        lines = [f"test accuracy {100 * self.accuracy:.2f}% ({self.errors} errors in {self.total} images)"]
        lines.append("per class: " + "  ".join(f"{k}: {100 * a:.2f}%" for k, a in enumerate(self.per_class_accuracy)))
        return "\n".join(lines)


def evaluate(
    model: torch.nn.Module,
    dataset=None,
    device: str | torch.device | None = None,
    batch_size: int = 500,
    limit: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Classify every image of ``dataset`` (default: the MNIST test set) in eval mode, without gradients.

    The model goes back to the mode it was in (training or not) afterwards.

    Args:
        model: returns an object with ``lengths`` ``(B, N_out)`` for ``model(x)``, or logits
            ``(B, N_out)`` (a :mod:`capslib.baselines` CNN).
        dataset: ``(image, label)`` pairs; None loads the MNIST test set (no augmentation).
        device: default: the model's device.
        batch_size: images per forward pass (does not change the result).
        limit: only the first ``limit`` images (e.g. :data:`TEST_SLICE`); None for all.

    Raises:
        ValueError: before any inference, for no images, images that are not finite or not in
            [0, 1] (0-255 pixels, standardised images), or labels outside ``[0, model.num_classes)``:
            checked once here, on the CPU tensors, so no batch on a GPU is ever read back for it.
    """
    if dataset is None:
        dataset = load_dataset("mnist", train=False)
    if len(dataset) == 0 or limit == 0:
        raise ValueError(
            f"evaluate got no images (dataset of {len(dataset)}, limit {limit}): an accuracy over nothing is undefined"
        )
    images, labels = to_tensors(dataset)  # (N, C, H, W), (N,)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    check_image_range(images, name="evaluation images")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None:  # a model without it is checked against its output width below
        check_label_range(labels, num_classes, name="evaluation labels")
    if device is not None:
        device = get_device(device)
        model.to(device)
    lengths = predict(model, images, batch_size, device=device, progress=progress, description="evaluating")
    predictions = lengths.argmax(dim=1)  # (N,)
    num_classes = lengths.shape[1]
    check_label_range(labels, num_classes, name="evaluation labels")
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    per_class = confusion.diag().float() / confusion.sum(dim=1).clamp_min(1).float()
    correct = int((predictions == labels).sum())
    return Evaluation(
        accuracy=correct / len(labels),
        errors=len(labels) - correct,
        total=len(labels),
        per_class_accuracy=per_class,
        confusion=confusion,
        predictions=predictions,
        labels=labels,
        lengths=lengths,
    )


@dataclass
class MultiEvaluation:
    """Result of :func:`evaluate_multimnist`.

    Attributes:
        both_right: the paper's metric: the fraction of pairs whose two longest capsules are
            exactly the two labels.
        at_least_one_right: for context only: at least one of the two longest capsules is a label.
        total: pairs evaluated.
        lengths: ``(total, N_out)`` capsule lengths; labels: ``(total, 2)``.
    """

    both_right: float
    at_least_one_right: float
    total: int
    lengths: torch.Tensor
    labels: torch.Tensor

    def summary(self) -> str:
        return (
            f"MultiMNIST both digits right {100 * self.both_right:.2f}% of {self.total} pairs "
            f"(error {100 * (1 - self.both_right):.2f}%); at least one right {100 * self.at_least_one_right:.2f}%"
        )


def evaluate_multimnist(
    model: torch.nn.Module, pairs=None, batch_size: int = 500, limit: int | None = None, progress: bool = True
) -> MultiEvaluation:
    """Score ``model`` on MultiMNIST pairs (default: the fixed test set, 10,000 pairs) in eval mode.

    Args:
        model: a CapsNet taking 36x36 images.
        pairs: a :class:`capslib.data.multimnist.Pairs`; None makes :func:`capslib.data.multimnist.multimnist_test_set`.
        limit: only the first ``limit`` pairs.
    """
    if pairs is None:
        pairs = multimnist_test_set(*to_tensors(load_dataset("mnist", train=False)))
    images, labels = pairs.images[:limit], pairs.labels[:limit]  # (N, 1, 36, 36), (N, 2)
    if len(images) == 0:
        raise ValueError("evaluate_multimnist got no pairs: an accuracy over nothing is undefined")
    lengths = predict(model, images, batch_size, progress=progress, description="evaluating")  # (N, N_out)
    return MultiEvaluation(
        both_right=float(both_right(lengths, labels).double().mean()),
        at_least_one_right=float(at_least_one_right(lengths, labels).double().mean()),
        total=len(labels),
        lengths=lengths,
        labels=labels,
    )
