"""Accuracy under one affine transformation at a time: the curves of affine robustness.

``robustness_curve(model, images, labels, "rotation", range(-60, 61, 10))`` transforms every image
by the same amount (:func:`capslib.data.affine.affine_transform`) for each amount and returns the
accuracy at each, so a CapsNet and a CNN can be compared transformation by transformation, beside
their accuracy on the mixed affNIST-style set (:func:`capslib.data.affine_mnist`).

The shipped models' comparison, the one notebook 09 draws, is made and committed by

    python -m capslib.robustness --out results/robustness_shipped.json

It tests the shipped CapsNet (``capsnet_mnist``) and the shipped baseline CNN
(``cnn_baseline_mnist``) on all 10,000 clean test digits, on the fixed affine test set and along
each curve of :data:`CURVES`, every point on all 10,000 test digits. The two models are matched in
clean accuracy the way the paper matched them (its CNN was stopped at CapsNet's MNIST accuracy):
each is the checkpoint its own training selected on validation, and their clean test accuracies
are printed and stored beside the affine ones, so the gap between them is in the same file.
:func:`load_robustness` reads the file back and checks it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.affine import AffineParameters, affine_transform
from ..data.datasets import affine_mnist, mnist, to_tensors
from ..functional import check_image_range, check_label_range
from ..pretrained import load_pretrained
from ..utils import get_device, hardware_name, write_json_atomic
from .accuracy import evaluate
from .predict import predict

__all__ = [
    "PARTS",
    "LIMITS",
    "CURVES",
    "robustness_curve",
    "paired_comparison",
    "mcnemar_p",
    "compare_models",
    "load_robustness",
    "main",
]

PARTS = ("rotation", "shear", "scale", "translate_x", "translate_y")
"""What :func:`robustness_curve` can vary: degrees, shear factor, scale (both axes), pixels."""

LIMITS = {
    "rotation": (-180.0, 180.0),
    "shear": (-0.99, 0.99),
    "scale": (0.1, 3.0),
    "translate_x": (-14, 14),
    "translate_y": (-14, 14),
}
"""The amounts each part accepts."""


def robustness_curve(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    part: str,
    amounts: Sequence[float],
    batch_size: int = 500,
    progress: bool = True,
) -> torch.Tensor:
    """The accuracy of ``model`` on ``images`` with every image transformed by each amount of ``part``.

    Args:
        model: a CapsNet (scores: capsule lengths) or a baseline CNN (scores: logits); run in eval mode.
        images: ``(N, C, H, W)`` in [0, 1], e.g. all 10,000 MNIST test digits.
        labels: ``(N,)`` their classes.
        part: one of :data:`PARTS`; ``"scale"`` scales both axes alike.
        amounts: the values of ``part`` (each within :data:`LIMITS`).

    Returns:
        ``(len(amounts),)`` float64 accuracies, in the order of ``amounts``.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    amounts = [float(a) for a in amounts]
    low, high = LIMITS[part]
    if not amounts or not all(low <= a <= high for a in amounts):
        raise ValueError(f"{part} amounts must be a non-empty list within [{low}, {high}], got {amounts}")
    check_image_range(images, name="images")
    check_label_range(labels, getattr(model, "num_classes", 10), name="labels")
    accuracies = []
    for amount in tqdm(amounts, desc=part, disable=not progress, leave=False):
        values = {"scale_x": amount, "scale_y": amount} if part == "scale" else {part: amount}
        moved = affine_transform(images, AffineParameters.identity(len(images), **values))  # (N, C, H, W)
        predicted = predict(model, moved, batch_size).argmax(dim=1)  # (N,)
        accuracies.append(float((predicted == labels.cpu()).double().mean()))
    return torch.tensor(accuracies, dtype=torch.float64)


def paired_comparison(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict:
    """Two models on the same images: where they agree, where only one is right, and whether the
    difference could be chance (the exact McNemar test, a two-sided sign test on the discordant images).

    Only the images one model gets right and the other wrong say anything about which is better:
    with ``n`` of them, under "equally good" each is A's with probability 1/2.

    Args:
        correct_a, correct_b: ``(N,)`` booleans, whether each model classified each image right.

    Returns:
        ``both_right``, ``only_a``, ``only_b``, ``both_wrong`` (counts) and ``p_value`` (two-sided;
        1.0 when no image is discordant).
    """
    if correct_a.shape != correct_b.shape or correct_a.dim() != 1:
        raise ValueError(
            f"expected two (N,) boolean tensors of one shape, got {tuple(correct_a.shape)} and {tuple(correct_b.shape)}"
        )
    a, b = correct_a.bool(), correct_b.bool()
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {
        "both_right": int((a & b).sum()),
        "only_a": only_a,
        "only_b": only_b,
        "both_wrong": int((~a & ~b).sum()),
        "p_value": mcnemar_p(only_a, only_b),
    }


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value of ``only_a`` against ``only_b`` discordant items (1.0 for none)."""
    n, k = only_a + only_b, min(only_a, only_b)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled (the distribution is symmetric), capped at 1.
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


CURVES = {
    "rotation": [-60, -45, -30, -15, 0, 15, 30, 45, 60],
    "shear": [-0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6],
    "scale": [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4],
    "translate_x": [-6, -4, -2, 0, 2, 4, 6],
}
"""The curves :func:`compare_models` measures by default: beyond affNIST's ranges on both sides
(rotation 20 degrees, shear 0.2, scale 0.8-1.2, the training shifts 2 px) to show where each model breaks."""

SHIPPED_MODELS = ("capsnet_mnist", "cnn_baseline_mnist")
RESULT_KEYS = ("models", "curves", "test_images", "command")
MODEL_KEYS = ("clean_accuracy", "clean_errors", "affine_accuracy", "affine_errors", "curves")


def compare_models(
    models: dict[str, torch.nn.Module],
    curves: dict[str, Sequence[float]] = CURVES,
    limit: int | None = None,
    batch_size: int = 500,
    progress: bool = True,
) -> dict:
    """Clean, affine-set and per-transformation accuracy of each model, on the same test digits.

    Args:
        models: name -> model (a CapsNet or a baseline CNN), each run in eval mode on its own device.
        curves: part -> amounts, as :func:`robustness_curve` takes them.
        limit: the first ``limit`` test digits only (smoke tests); None: all 10,000.

    Returns:
        ``{"test_images", "curves": {part: amounts}, "models": {name: {"clean_accuracy",
        "clean_errors", "affine_accuracy", "affine_errors", "curves": {part: [accuracy, ...]},
        "parameters"}}}``.
    """
    for part in curves:
        if part not in PARTS:
            raise ValueError(f"curve parts must be among {PARTS}, got {part!r}")
    images, labels = to_tensors(mnist(train=False))  # (10000, 1, 28, 28), (10000,)
    affine_set, _ = affine_mnist()
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    results = {"test_images": len(labels), "curves": {p: [float(a) for a in v] for p, v in curves.items()}}
    results["models"] = {}
    for name, model in models.items():
        clean = evaluate(model, torch.utils.data.TensorDataset(images, labels), limit=limit, progress=progress)
        affine = evaluate(model, affine_set, limit=limit, progress=progress)
        measured = {
            part: robustness_curve(model, images, labels, part, amounts, batch_size, progress).tolist()
            for part, amounts in curves.items()
        }
        results["models"][name] = {
            "clean_accuracy": clean.accuracy,
            "clean_errors": clean.errors,
            "affine_accuracy": affine.accuracy,
            "affine_errors": affine.errors,
            "curves": measured,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    return results


def load_robustness(path: str | Path) -> dict:
    """A results file of ``python -m capslib.robustness``, checked.

    Raises:
        FileNotFoundError: if there is no such file, saying how to make it.
        ValueError: if it is not JSON or lacks the keys a result has, naming the file and the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no robustness results at {path}: run python -m capslib.robustness --out {path}")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a JSON robustness result: {err}") from None
    missing = [key for key in RESULT_KEYS if not isinstance(result, dict) or key not in result]
    if missing:
        raise ValueError(f"{path} is not a robustness result: expected the keys {list(RESULT_KEYS)}, missing {missing}")
    for name, measured in result["models"].items():
        missing = [key for key in MODEL_KEYS if not isinstance(measured, dict) or key not in measured]
        if missing:
            raise ValueError(f"{path}: model {name!r} lacks {missing} (expected {list(MODEL_KEYS)})")
        for part, amounts in result["curves"].items():
            if len(measured["curves"].get(part, [])) != len(amounts):
                raise ValueError(f"{path}: model {name!r} has no {len(amounts)}-point {part} curve")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m capslib.robustness",
        description="Shipped CapsNet vs shipped CNN: clean, affine-set and per-transformation test accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="results/robustness_shipped.json", help="the JSON results file")
    parser.add_argument("--models", nargs="+", default=list(SHIPPED_MODELS), help="shipped models (data/pretrained)")
    parser.add_argument("--test-limit", type=int, default=None, help="the first N test digits only (smoke tests)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best there is)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (None: torch's default)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device or "auto")
    models = {name: load_pretrained(device, name=name) for name in args.models}  # FileNotFoundError names the file
    start = time.perf_counter()
    result = compare_models(models, limit=args.test_limit)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["hardware"] = hardware_name(device)
    result["torch_version"] = torch.__version__
    result["command"] = shlex.join(["python", "-m", "capslib.robustness", *argv])
    out = write_json_atomic(result, args.out)
    for name, measured in result["models"].items():
        print(
            f"{name}: clean {100 * measured['clean_accuracy']:.2f}% ({measured['clean_errors']} errors), "
            f"affine {100 * measured['affine_accuracy']:.2f}% ({measured['affine_errors']} errors)"
        )
    print(f"written to {out} ({result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
