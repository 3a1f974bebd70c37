"""Honest evaluation: accuracy on the FULL test set (10,000 MNIST images), never augmented.

    python -m capslib.evaluate runs/capsnet/best.pt           # your own run
    python -m capslib.evaluate pretrained                     # the shipped model

prints the test accuracy, the error count and per-class accuracy, and writes a confusion-matrix
figure (drawn by :func:`capslib.plots.plot_confusion_matrix`) named
``<checkpoint stem>_confusion.png``: beside the checkpoint it evaluated
(``runs/capsnet/best_confusion.png``), or for ``pretrained`` into ``runs/evaluate/`` under the
working directory (``capsnet_mnist_confusion.png``), where ``capslib.train`` writes its runs too.
``--out DIR`` puts it in ``DIR`` instead; ``--figure FILE`` names the file itself. ``--export data/pretrained``
also writes the model as a half-precision state dict with a model card holding the accuracy OF THAT
HALF-PRECISION FILE.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.datasets import load_dataset, to_tensors
from ..functional import check_image_range, check_label_range, class_scores
from ..utils import eval_mode, get_device, hardware_name

__all__ = ["Evaluation", "evaluate", "MultiEvaluation", "evaluate_multimnist", "TEST_SLICE", "PRETRAINED_OUT", "main"]

TEST_SLICE = 2000
"""The fixed test slice (the first 2,000 test images) whose error count the model card records."""

PRETRAINED_OUT = Path("runs") / "evaluate"
"""Where the CLI writes the figure of ``pretrained`` without ``--out``, relative to the working directory."""


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
    if device is None:
        device = next(model.parameters()).device
    else:
        device = get_device(device)
        model.to(device)
    all_lengths = []
    with eval_mode(model):
        for start in tqdm(range(0, len(images), batch_size), desc="evaluating", disable=not progress, leave=False):
            x = images[start : start + batch_size].to(device)
            all_lengths.append(class_scores(model(x)).float().cpu())  # (B, N_out)
    lengths = torch.cat(all_lengths)  # (N, N_out)
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
        pairs: a :class:`capslib.multimnist.Pairs`; None makes :func:`capslib.multimnist.multimnist_test_set`.
        limit: only the first ``limit`` pairs.
    """
    from ..data.multimnist import at_least_one_right, both_right, multimnist_test_set

    if pairs is None:
        pairs = multimnist_test_set(*to_tensors(load_dataset("mnist", train=False)))
    images, labels = pairs.images[:limit], pairs.labels[:limit]  # (N, 1, 36, 36), (N, 2)
    if len(images) == 0:
        raise ValueError("evaluate_multimnist got no pairs: an accuracy over nothing is undefined")
    device = next(model.parameters()).device
    scores = []
    with eval_mode(model), torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="evaluating", disable=not progress, leave=False):
            scores.append(class_scores(model(images[start : start + batch_size].to(device))).float().cpu())
    lengths = torch.cat(scores)  # (N, N_out)
    return MultiEvaluation(
        both_right=float(both_right(lengths, labels).double().mean()),
        at_least_one_right=float(at_least_one_right(lengths, labels).double().mean()),
        total=len(labels),
        lengths=lengths,
        labels=labels,
    )


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _hardware(device: torch.device) -> str:
    return hardware_name(device)


def _describe(model: torch.nn.Module) -> str:
    """A model card's one-line description of ``model``."""
    config = getattr(model, "config", {})
    if "model" in config:  # a capslib.baselines CNN
        parameters = sum(p.numel() for p in model.parameters())
        return (
            f"baseline CNN '{config['model']}' (capslib.baselines): convolutions {list(config['channels'])}, "
            f"hidden {list(config['hidden'])}, {parameters:,} parameters, cross-entropy, trained on MNIST"
        )
    decoder = "with decoder" if getattr(model, "decoder", None) is not None else "without decoder"
    return f"CapsNet (Sabour et al. 2017), {model.routing_iterations} routing iterations, {decoder}, trained on MNIST"


def _provenance(args, device: torch.device, config: dict) -> dict:
    """The card entries every shipped model has: where and how it was made, and in what precision."""
    return {
        "hardware": _hardware(device),
        "torch_version": str(torch.__version__),
        "seed": config.get("seed"),
        "train_config": config,
        "commit": args.commit or _git_commit(),
        "dtype": "float16 state dict (loaded as float32)",
    }


def _export_multimnist(args, path: Path, device: torch.device, fp32: MultiEvaluation) -> None:
    """Write the half-precision MultiMNIST model and its card (both-right accuracy on the fixed test pairs)."""
    from ..pretrained import load_checkpoint, read_torch_file, save_pretrained

    if args.checkpoint == "pretrained":
        raise ValueError("--export needs a training checkpoint, not 'pretrained'")
    checkpoint = read_torch_file(path, "a capslib training checkpoint")
    half = load_checkpoint(args.checkpoint, device).half().float()  # the weights as shipped: fp16
    scored = evaluate_multimnist(half, batch_size=args.batch_size, progress=False)
    config = checkpoint.get("config", {})
    train_digits = (config.get("train_limit") or 60000) - config.get("val_size", 5000)
    selected = checkpoint.get("best_epoch")
    history = checkpoint.get("history", [])
    card = {
        "name": args.name,
        "description": f"CapsNet (Sabour et al. 2017) at 36x36, {half.routing_iterations} routing iterations, "
        f"{'with' if half.decoder is not None else 'without'} decoder, trained on MultiMNIST pairs",
        "data": f"MultiMNIST pairs made on the fly from MNIST training digits 0-{train_digits - 1} (each digit "
        f"first once per epoch, a partner of another class, shifts up to 4 px); validation: fixed pairs of the "
        f"last {config.get('val_size', 5000)} training digits; test: capslib.multimnist.multimnist_test_set",
        "selected_epoch": selected,
        "selected_by": "both-right accuracy on the fixed validation pairs (never the test set)",
        "val_accuracy": checkpoint.get("best_val_accuracy"),
        "epochs_trained": len(history),
        # Histories written before "train_examples" existed: every digit came first once per epoch.
        "pairs_seen": sum(r.get("train_examples", train_digits) for r in history[: selected or 0]),
        "pairs_seen_note": "training pairs seen by the selected checkpoint; the paper trained on 60M pairs",
        # Wall time of the run up to the selected epoch (histories without "elapsed_seconds": the
        # sum of epoch times, which misses the part of a resumed epoch done before the resume).
        "train_seconds": round(
            history[selected - 1].get("elapsed_seconds") or sum(r.get("epoch_seconds", 0.0) for r in history[:selected])
            if selected
            else 0.0,
            1,
        ),
        **_provenance(args, device, config),
        "test_both_right": scored.both_right,
        "test_errors": round((1 - scored.both_right) * scored.total),
        "test_at_least_one_right": scored.at_least_one_right,
        "test_pairs": scored.total,
        "fp32_test_both_right": fp32.both_right,
        "measured_by": "python -m capslib.evaluate <checkpoint> --dataset multimnist --export data/pretrained "
        "--name capsnet_multimnist",
    }
    out = save_pretrained(half, args.export, card, name=args.name)
    print(f"exported {out}: fp16 both right {100 * scored.both_right:.2f}% of {scored.total} test pairs")


def main(argv: list[str] | None = None) -> Evaluation:
    from ..pretrained import PRETRAINED_NAME, load_checkpoint, load_pretrained, read_torch_file, save_pretrained

    p = argparse.ArgumentParser(
        prog="python -m capslib.evaluate",
        description="Test accuracy of a CapsNet (or a baseline CNN) on the full MNIST test set "
        "(10,000 images, no augmentation).",
    )
    p.add_argument("checkpoint", help="a training checkpoint (best.pt / last.pt / run dir), or 'pretrained'")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder for the confusion-matrix figure <stem>_confusion.png (default: the checkpoint's folder; "
        f"for 'pretrained': {PRETRAINED_OUT}/ under the working directory)",
    )
    p.add_argument("--figure", default=None, metavar="FILE", help="the figure's exact path (overrides --out)")
    p.add_argument("--export", default=None, metavar="DIR", help="also write a half-precision model + card here")
    p.add_argument("--commit", default=None, help="commit to record in the card (default: git HEAD)")
    p.add_argument(
        "--dataset",
        default="mnist",
        choices=("mnist", "multimnist"),
        help="mnist: the 10,000 test images; multimnist: the fixed 10,000 test pairs (both digits must be right)",
    )
    p.add_argument(
        "--name",
        default=PRETRAINED_NAME,
        help="the shipped model that 'pretrained' means (e.g. cnn_baseline_mnist), and the name --export writes",
    )
    args = p.parse_args(argv)

    device = get_device(args.device)
    if args.checkpoint == "pretrained":
        model = load_pretrained(device, name=args.name)
        # Never the working directory itself: a figure there lands in whatever repository that is.
        figure = Path(args.out or PRETRAINED_OUT) / f"{args.name}_confusion.png"
    else:
        model = load_checkpoint(args.checkpoint, device)
        path = Path(args.checkpoint)
        path = path / "best.pt" if path.is_dir() else path
        figure = Path(args.out or path.parent) / f"{path.stem}_confusion.png"
    if args.figure:
        figure = Path(args.figure)

    start = time.monotonic()
    if args.dataset == "multimnist":
        scored = evaluate_multimnist(model, batch_size=args.batch_size)
        print(scored.summary())
        print(f"({time.monotonic() - start:.1f}s on {_hardware(device)})")
        if args.export:
            _export_multimnist(args, path, device, scored)
        return scored
    result = evaluate(model, device=device, batch_size=args.batch_size)
    print(result.summary())
    print(f"({time.monotonic() - start:.1f}s on {_hardware(device)})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import plot_confusion_matrix

    ax = plot_confusion_matrix(result.confusion, title=f"Confusion matrix: {result.errors} errors in {result.total}")
    figure.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(figure, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    print(f"confusion matrix written to {figure}")

    if args.export:
        if args.checkpoint == "pretrained":
            raise ValueError("--export needs a training checkpoint, not 'pretrained'")
        # The card's training facts (history, config, selected epoch) come from the checkpoint itself.
        checkpoint = read_torch_file(path, "a capslib training checkpoint")
        half = load_checkpoint(args.checkpoint, device).half().float()  # the weights as shipped: fp16
        full = evaluate(half, device=device, batch_size=args.batch_size, progress=False)
        sliced = evaluate(half, device=device, batch_size=args.batch_size, limit=TEST_SLICE, progress=False)
        history = checkpoint.get("history", [])
        config = checkpoint.get("config", {})
        card = {
            "name": args.name,
            "description": _describe(half),
            "data": f"MNIST training images 0-{60000 - config.get('val_size', 5000) - 1} "
            f"(the last {config.get('val_size', 5000)} validate), shift augmentation +-{config.get('max_shift')} px",
            "selected_epoch": checkpoint.get("best_epoch"),
            "selected_by": f"validation accuracy on the last {config.get('val_size', 5000)} training images "
            "(never the test set)",
            "val_accuracy": checkpoint.get("best_val_accuracy"),
            "epochs_trained": len(history),
            "train_seconds": round(checkpoint.get("elapsed_seconds", 0.0), 1),
            **_provenance(args, device, config),
            "test_accuracy": full.accuracy,
            "test_errors": full.errors,
            "test_images": full.total,
            "test_slice_images": TEST_SLICE,
            "test_slice_errors": sliced.errors,
            "fp32_test_errors": result.errors,
            "measured_by": "python -m capslib.evaluate <checkpoint> --export data/pretrained",
        }
        out = save_pretrained(half, args.export, card, name=args.name)
        print(
            f"exported {out}: fp16 test accuracy {100 * full.accuracy:.2f}% ({full.errors} errors), "
            f"{sliced.errors} errors on the first {TEST_SLICE} test images"
        )
    return result


if __name__ == "__main__":
    main()
