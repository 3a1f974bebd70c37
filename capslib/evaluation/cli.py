"""``python -m capslib.evaluate``: test accuracy of a checkpoint or a shipped model, a
confusion-matrix figure, and optionally a half-precision export with its model card.

    python -m capslib.evaluate runs/capsnet/best.pt           # your own run
    python -m capslib.evaluate pretrained                     # the shipped model

prints the test accuracy, the error count and per-class accuracy, and writes a confusion-matrix
figure (drawn by :func:`capslib.plots.plot_confusion_matrix`) named
``<checkpoint stem>_confusion.png``: beside the checkpoint it evaluated
(``runs/capsnet/best_confusion.png``), or for ``pretrained`` into ``runs/evaluate/`` under the
working directory (``capsnet_mnist_confusion.png``), where ``capslib.train`` writes its runs too.
``--out DIR`` puts it in ``DIR`` instead; ``--figure FILE`` names the file itself. ``--export data/pretrained``
also writes the model as a half-precision state dict with a model card holding the accuracy OF THAT
HALF-PRECISION FILE (:mod:`capslib.evaluation.cards`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data import load_dataset
from ..pretrained import PRETRAINED_NAME, load_checkpoint, load_pretrained
from ..utils import get_device, hardware_name
from .accuracy import TEST_SLICE, Evaluation, MultiEvaluation, evaluate, evaluate_multimnist
from .cards import export_mnist, export_multimnist

__all__ = ["PRETRAINED_OUT", "build_parser", "main"]

PRETRAINED_OUT = Path("runs") / "evaluate"
"""Where the CLI writes the figure of ``pretrained`` without ``--out``, relative to the working directory."""


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="also write a half-precision model + card here",
    )
    p.add_argument("--commit", default=None, help="commit to record in the card (default: git HEAD)")
    p.add_argument(
        "--dataset",
        default="mnist",
        choices=("mnist", "fashion-mnist", "multimnist"),
        help="mnist or fashion-mnist: its 10,000 test images; multimnist: the fixed 10,000 test pairs "
        "(both digits must be right)",
    )
    p.add_argument(
        "--name",
        default=PRETRAINED_NAME,
        help="the shipped model that 'pretrained' means (e.g. cnn_baseline_mnist), and the name --export writes",
    )
    return p


def main(argv: list[str] | None = None) -> Evaluation | MultiEvaluation:
    """Run the command; returns what it measured (:class:`MultiEvaluation` with ``--dataset multimnist``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.export and args.checkpoint == "pretrained":
        # Refused before any work: a card's training facts come from the training checkpoint.
        parser.error("--export needs a training checkpoint (a run's best.pt), not 'pretrained'")

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
        print(f"({time.monotonic() - start:.1f}s on {hardware_name(device)})")
        if args.export:
            out, card = export_multimnist(
                args.checkpoint, args.export, args.name, device, args.batch_size, args.commit, scored.both_right
            )
            print(f"exported {out}: fp16 both right {100 * card['test_both_right']:.2f}% of {card['test_pairs']} pairs")
        return scored

    result = evaluate(model, load_dataset(args.dataset, train=False), device=device, batch_size=args.batch_size)
    print(result.summary())
    print(f"({time.monotonic() - start:.1f}s on {hardware_name(device)})")
    _save_confusion(result, figure)
    print(f"confusion matrix written to {figure}")
    if args.export:
        out, card = export_mnist(
            args.checkpoint, args.export, args.name, device, args.batch_size, args.commit, result.errors, args.dataset
        )
        print(
            f"exported {out}: fp16 test accuracy {100 * card['test_accuracy']:.2f}% ({card['test_errors']} errors), "
            f"{card['test_slice_errors']} errors on the first {TEST_SLICE} test images"
        )
    return result


def _save_confusion(result: Evaluation, figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a command writes files; it never opens a window
    import matplotlib.pyplot as plt

    from ..plots import plot_confusion_matrix

    ax = plot_confusion_matrix(result.confusion, title=f"Confusion matrix: {result.errors} errors in {result.total}")
    figure.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(figure, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
