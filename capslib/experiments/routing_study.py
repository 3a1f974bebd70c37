"""The routing question at convergence: one small capsule network (:class:`capslib.EfficientCapsNet`),
every routing algorithm of :data:`capslib.ROUTING_ALGORITHMS` (and dynamic routing at 1 and 3
iterations), one recipe, several seeds, tested on all 10,000 MNIST test images and on the fixed
affine test set.

    python -m capslib.routing_study --out results/routing_study --checkpoints runs/routing_study --seeds 0 1 2

Runs, resumption and selection are those of :mod:`capslib.experiments.ablation` (the best
validation epoch is tested; a finished run is skipped; a killed one resumes from its ``last.pt``).
Every raw result keeps the indices of the test images it got wrong, so two routings can be
compared image by image: the summary holds, per seed, an exact McNemar test of each routing
against dynamic routing with 3 iterations (the paper's), on the same test images.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..data.datasets import affine_mnist
from ..utils import atomic_write, write_json_atomic
from .ablation import add_run_options, load_results, recipe_from, run_variants, summarize, summary_markdown
from .ablation import paired_tests as ablation_paired_tests
from .status import status_lines, study_status
from .table1 import Variant

__all__ = ["ROUTING_VARIANTS", "REFERENCE", "RECIPE", "paired_tests", "main"]

ROUTING_VARIANTS = {
    v.name: v
    for v in (
        Variant("dynamic-r3", "efficient-capsnet", 3, True, routing="dynamic"),
        Variant("dynamic-r1", "efficient-capsnet", 1, True, routing="dynamic"),
        Variant("uniform", "efficient-capsnet", None, True, routing="uniform"),
        Variant("self_attention", "efficient-capsnet", None, True, routing="self_attention"),
        Variant("em", "efficient-capsnet", 3, True, routing="em"),
    )
}
"""The routings compared, all in Efficient-CapsNet with its decoder; ``dynamic-r1`` routes with
uniform couplings too, but through dynamic routing's code and squash."""

REFERENCE = "dynamic-r3"
"""The routing each other one is tested against: the paper's dynamic routing, 3 iterations."""

RECIPE = dict(lr=2e-3, lr_decay=0.9, max_shift=2, reconstruction_weight=0.0005, ema_decay=0.999)
"""The shared recipe beside the command-line budget: Adam from 2e-3, x0.9 an epoch (1e-4 by epoch
30: the runs settle), shifts of up to 2 pixels, the reconstruction loss at the paper's weight, and
validation and testing of a moving average of the weights (0.999 a step)."""


def paired_tests(results: list[dict], reference: str = REFERENCE) -> list[dict]:
    """:func:`capslib.experiments.ablation.paired_tests` of every routing against ``reference``, seed by seed."""
    names = sorted({r["variant"] for r in results} - {reference})
    return ablation_paired_tests(results, [(name, reference) for name in names])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m capslib.routing_study",
        description="Routing algorithms side by side in Efficient-CapsNet: one recipe, several seeds, paired tests.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="results/routing_study", help="results folder (runs/*.json, summary.*)")
    parser.add_argument(
        "--variants", nargs="+", default=list(ROUTING_VARIANTS), choices=list(ROUTING_VARIANTS), help="which routings"
    )
    add_run_options(parser, epochs=30, batch_size=64)
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    checkpoints = Path(args.checkpoints) if args.checkpoints else None
    if args.status:
        rows = study_status(args.variants, args.seeds, out, checkpoints, args.epochs)
        print("\n".join(status_lines(rows, args.epochs)))
        return {"status": rows}
    recipe = recipe_from(args, **RECIPE)
    affine_set = None if args.no_affine else affine_mnist()[0]
    run_variants(args.variants, ROUTING_VARIANTS, args.seeds, recipe, out, affine_set, args.test_limit, checkpoints)
    results = load_results(out)
    rows, pairs = summarize(results, ROUTING_VARIANTS, paper={}), paired_tests(results)
    command = shlex.join(["python", "-m", "capslib.routing_study", *argv])
    write_json_atomic({"routings": rows, "paired": pairs, "command": command}, out / "summary.json")
    text = summary_markdown(rows, command, pairs, name_column="routing", paper=False)
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    return {"routings": rows, "paired": pairs}


if __name__ == "__main__":
    main()
