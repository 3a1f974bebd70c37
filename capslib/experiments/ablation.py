"""The paper's Table 1, measured here: CapsNet with 1 and 3 routing iterations, each with and
without the reconstruction loss, and a baseline CNN, all trained with one recipe and budget over
several seeds, evaluated on all 10,000 MNIST test images (never augmented) and on the fixed
affine test set (:func:`capslib.data.affine_mnist`).

    python -m capslib.ablation --out results/ablation --checkpoints runs/ablation --epochs 3 --seeds 0 1 2

Every run is selected on validation only: :func:`capslib.training.loop.fit` keeps the epoch with the best
validation accuracy in ``best.pt`` (ties: the earlier epoch, since only a strictly better one
replaces it), and that checkpoint is the one tested. Each finished run writes
``<out>/runs/<variant>_seed<k>.json`` (its raw result: the test, the images it got wrong, its
validation accuracy after every epoch) and is skipped when the command runs again; a killed run
resumes from its ``last.pt``. ``<out>/summary.md`` and ``summary.json`` hold the mean +- standard
deviation (sample, n - 1) per variant beside the paper's numbers; ``summary.md`` and ``paired.json``
hold, per seed, an exact McNemar test of 1 against 3 routing iterations on the same test images.

A finished run trained further is the longer run: the learning rate decays per epoch, so
``--epochs 10`` with the checkpoints of a 5-epoch run resumes its ``last.pt`` and trains epochs 6-10
(give a new ``--out``, or the finished results are skipped).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..data.datasets import affine_mnist, load_dataset
from ..evaluation.accuracy import evaluate
from ..evaluation.robustness import mcnemar_p
from ..pretrained import load_checkpoint
from ..training.faults import TrainingInterrupted
from ..training.loop import TrainConfig, fit
from ..utils import atomic_write, hardware_name, write_json_atomic
from .status import status_lines, study_status
from .table1 import PAPER_TEST_ERROR, VARIANTS, Variant

__all__ = [
    "Variant",
    "VARIANTS",
    "PAPER_TEST_ERROR",
    "run_variant",
    "run_variants",
    "load_results",
    "summarize",
    "mean_plus_minus",
    "summary_markdown",
    "PAIRS",
    "paired_tests",
    "main",
]


PAIRS = (("capsnet-r1", "capsnet-r3"), ("capsnet-r1-recon", "capsnet-r3-recon"))
"""Table 1's paired comparisons, (variant, reference): 1 against 3 routing iterations, without and with
the reconstruction loss."""

RESULT_KEYS = ("variant", "seed", "test_accuracy", "test_errors", "test_images", "affine_accuracy", "best_val_accuracy")


def run_variant(
    variant: Variant,
    seed: int,
    recipe: TrainConfig,
    out: Path,
    affine_set=None,
    test_limit: int | None = None,
    checkpoints: Path | None = None,
) -> dict:
    """Train ``variant`` with ``recipe`` and ``seed`` (resuming its own ``last.pt`` if one is
    there), test the best-validating checkpoint, write and return its raw result.

    ``test_limit`` tests only the first images (a smoke test's budget; the result records how
    many); None tests all 10,000. The run's checkpoints go to ``checkpoints`` (default
    ``<out>/checkpoints``), its result to ``<out>/runs/``."""
    run_dir = (checkpoints or out / "checkpoints") / f"{variant.name}_seed{seed}"
    config = TrainConfig(
        **{
            **asdict(recipe),
            "model": variant.model,
            "routing_iterations": variant.routing_iterations or recipe.routing_iterations,
            "routing": variant.routing,
            "reconstruction": variant.reconstruction,
            "seed": seed,
            "out_dir": str(run_dir),
        }
    )
    started = time.monotonic()
    trained = fit(config=config, resume=(run_dir / "last.pt").exists())
    model = load_checkpoint(run_dir / "best.pt", device=config.device)
    test = evaluate(model, load_dataset(config.dataset, train=False), limit=test_limit, progress=False)
    affine = evaluate(model, affine_set, limit=test_limit, progress=False) if affine_set is not None else None
    history = trained["history"]  # every epoch's record, the resumed ones too
    result = {
        "variant": variant.name,
        "seed": seed,
        "test_accuracy": test.accuracy,
        "test_errors": test.errors,
        "test_images": test.total,
        "test_wrong": wrong(test),
        "affine_accuracy": affine.accuracy if affine is not None else None,
        "affine_wrong": wrong(affine) if affine is not None else None,
        "best_val_accuracy": trained["best_val_accuracy"],
        "best_epoch": trained["best_epoch"],
        "val_accuracy_per_epoch": [record["val_accuracy"] for record in history],
        "epochs": config.epochs,
        "train_images_per_epoch": config.train_limit or "all",
        "seconds": round(time.monotonic() - started, 1),  # this command's: training (resumed: its rest) and tests
        "train_seconds": round(sum(record["epoch_seconds"] for record in history), 1),  # every epoch's
        # the run's wall time to its last epoch, validation included, across every stop and resume
        # (train_seconds misses the part of a resumed epoch done before the stop)
        "wall_seconds": round(history[-1].get("elapsed_seconds", 0.0), 1) if history else 0.0,
        # per epoch: its seconds (a resumed epoch: its rest only) and machine (a run may span several)
        "epoch_seconds": [round(record["epoch_seconds"], 1) for record in history],
        "epoch_hardware": [record.get("hardware", "unrecorded") for record in history],
        "epoch_amp": [record.get("amp", "unrecorded") for record in history],
        "config": asdict(config),
        "hardware": hardware_name(next(model.parameters()).device),
        "torch": torch.__version__,
    }
    write_json_atomic(result, out / "runs" / f"{variant.name}_seed{seed}.json")
    return result


def wrong(evaluation) -> list[int]:
    """The indices of the images ``evaluation`` got wrong: what a paired test of two models needs."""
    return torch.nonzero(evaluation.predictions != evaluation.labels).flatten().tolist()


def run_variants(
    names: list[str],
    variants: dict[str, Variant],
    seeds: list[int],
    recipe: TrainConfig,
    out: Path,
    affine_set=None,
    test_limit: int | None = None,
    checkpoints: Path | None = None,
) -> None:
    """:func:`run_variant` for every seed and every variant of ``names``, seed by seed, skipping
    the runs whose result ``<out>/runs/<name>_seed<k>.json`` exists. SIGINT or SIGTERM stops the run
    under way after its checkpoint, with one line that says how to resume, and exits with 128 + the
    signal."""
    for seed in seeds:
        for name in names:
            if (out / "runs" / f"{name}_seed{seed}.json").exists():
                print(f"{name} seed {seed}: done already (delete its runs/*.json to redo it)", flush=True)
                continue
            print(f"{name} seed {seed}: training", flush=True)
            try:
                result = run_variant(variants[name], seed, recipe, out, affine_set, test_limit, checkpoints)
            except TrainingInterrupted as stop:  # SIGINT/SIGTERM: fit checkpointed; one line, not a traceback
                print(
                    f"{stop}; {name} seed {seed} stopped. Run the same command again to resume it "
                    "(finished runs are skipped)",
                    file=sys.stderr,
                    flush=True,
                )
                raise SystemExit(stop.exit_status) from None
            print(f"{name} seed {seed}: test accuracy {100 * result['test_accuracy']:.2f}%", flush=True)


def load_results(folder: str | Path) -> list[dict]:
    """Every run's raw result in ``<folder>/runs/*.json``.

    Raises:
        FileNotFoundError: if there is no such folder or it holds no results, naming it.
        ValueError: if a file is not JSON or lacks a result's keys, naming the file and the keys.
    """
    runs = Path(folder) / "runs"
    files = sorted(runs.glob("*.json")) if runs.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no ablation results in {runs}: run python -m capslib.ablation --out {folder}")
    results = []
    for path in files:
        try:
            result = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a JSON ablation result: {err}") from None
        missing = [key for key in RESULT_KEYS if not isinstance(result, dict) or key not in result]
        if missing:
            raise ValueError(
                f"{path} is not an ablation result: expected the keys {list(RESULT_KEYS)}, missing {missing}"
            )
        results.append(result)
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return mean, std


def summarize(results: list[dict], variants=VARIANTS, paper=PAPER_TEST_ERROR) -> list[dict]:
    """Per variant (in the order of ``variants``, Table 1's by default): runs, test error % and
    affine accuracy % as mean and std, beside the ``paper``'s test error."""
    rows = []
    for name in variants:
        mine = [r for r in results if r["variant"] == name]
        if not mine:
            continue
        error, error_std = _mean_std([100 * (1 - r["test_accuracy"]) for r in mine])
        affine = [100 * r["affine_accuracy"] for r in mine if r["affine_accuracy"] is not None]
        affine_mean, affine_std = _mean_std(affine) if affine else (float("nan"), float("nan"))
        rows.append(
            {
                "variant": name,
                "runs": len(mine),
                "seeds": sorted(r["seed"] for r in mine),
                "test_images": "/".join(sorted({str(r["test_images"]) for r in mine})),
                "test_error_percent": error,
                "test_error_std": error_std,
                "affine_accuracy_percent": affine_mean,
                "affine_accuracy_std": affine_std,
                "paper_test_error_percent": paper.get(name, "-"),
            }
        )
    return rows


def paired_tests(results: list[dict], pairs) -> list[dict]:
    """For each seed and each ``(variant, reference)`` of ``pairs``: the test images only one of the
    two got right, and the exact McNemar p-value, on the MNIST test set and on the affine set (where
    both runs measured it). Runs without their partner of the same seed, or tested on other
    images, are left out."""
    rows = []
    by_run = {(r["variant"], r["seed"]): r for r in results}
    for seed in sorted({r["seed"] for r in results}):
        for name, reference in pairs:
            result, base = by_run.get((name, seed)), by_run.get((reference, seed))
            if result is None or base is None or result["test_images"] != base["test_images"]:
                continue
            row = {"variant": name, "seed": seed, "against": reference}
            for split in ("test", "affine"):
                mine, theirs = result.get(f"{split}_wrong"), base.get(f"{split}_wrong")
                if mine is None or theirs is None:
                    continue
                only_mine_right = len(set(theirs) - set(mine))  # the reference got them wrong, this one right
                only_theirs_right = len(set(mine) - set(theirs))
                row[f"{split}_only_this_right"] = only_mine_right
                row[f"{split}_only_reference_right"] = only_theirs_right
                row[f"{split}_p_value"] = mcnemar_p(only_mine_right, only_theirs_right)
            rows.append(row)
    return rows


def paired_markdown(pairs: list[dict]) -> list[str]:
    """The paired tests as Markdown lines (none without pairs)."""
    if not pairs:
        return []
    lines = [
        "",
        "Paired on the same images, per seed: images only one of the two got right, exact McNemar p.",
        "",
        "| variant | against | seed | test: only it / only the other | p | affine: only it / only the other | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in pairs:
        cells = [pair["variant"], pair["against"], pair["seed"]]
        for split in ("test", "affine"):
            if f"{split}_p_value" in pair:
                counts = f"{pair[f'{split}_only_this_right']} / {pair[f'{split}_only_reference_right']}"
                cells += [counts, f"{pair[f'{split}_p_value']:.3g}"]
            else:
                cells += ["-", "-"]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def mean_plus_minus(mean: float, std: float) -> str:
    """A row's mean and sample standard deviation as text: ``"1.23 +- 0.04"``; a row of one run has no
    spread (``"1.23 (one run)"``), a row without the measurement reads ``"-"``."""
    if math.isnan(mean):
        return "-"
    return f"{mean:.2f} (one run)" if math.isnan(std) else f"{mean:.2f} +- {std:.2f}"


def summary_markdown(
    rows: list[dict], command: str, pairs: list[dict] = (), name_column: str = "variant", paper: bool = True
) -> str:
    """The summary as a Markdown table (and the paired tests), with the command that made it.

    Args:
        rows: :func:`summarize`'s rows.
        command: the command line that made the runs, printed under the tables.
        pairs: :func:`paired_tests`' rows, drawn as a second table (none: no second table).
        name_column: the heading of the first column (``"routing"`` in the routing study).
        paper: add the paper's Table 1 error of each row (only the ablation's rows have one).
    """
    heads = [name_column, "runs", "test images", "test error % (mean +- std)"]
    heads += ["paper's test error %"] if paper else []
    heads += ["affine test accuracy %"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        error = mean_plus_minus(row["test_error_percent"], row["test_error_std"])
        affine = mean_plus_minus(row["affine_accuracy_percent"], row["affine_accuracy_std"])
        cells = [row["variant"], row["runs"], row["test_images"], error]
        cells += [row["paper_test_error_percent"]] if paper else []
        cells += [affine]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += paired_markdown(list(pairs))
    return "\n".join(lines) + f"\n\nMade by: `{command}`\n"


def add_run_options(parser: argparse.ArgumentParser, epochs: int, batch_size: int) -> None:
    """The options every multi-run experiment shares: seeds, the budget, devices, the test."""
    parser.add_argument(
        "--checkpoints", default=None, help="where the runs' checkpoints go (default: <out>/checkpoints; ~100 MB a run)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one run per seed and variant")
    parser.add_argument("--epochs", type=int, default=epochs, help="the shared budget: epochs per run")
    parser.add_argument(
        "--train-limit", type=int, default=None, help="train on the first N training images (None: 55,000)"
    )
    parser.add_argument("--batch-size", type=int, default=batch_size, help="the shared batch size")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (None: torch's default)")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast: on CUDA, or on a CPU with native bf16 (AVX512-BF16, AMX; elsewhere it is slower); "
        "each epoch's record says whether it ran so",
    )
    parser.add_argument("--val-size", type=int, default=5000, help="the last N training images validate")
    parser.add_argument("--test-limit", type=int, default=None, help="test on the first N images only (smoke tests)")
    parser.add_argument("--no-affine", action="store_true", help="skip the affine test set")
    parser.add_argument(
        "--status",
        action="store_true",
        help="train nothing: say which runs of this command are done, under way (where they resume) or not "
        "started, and about how long the rest takes at the pace so far",
    )


def recipe_from(args: argparse.Namespace, **shared) -> TrainConfig:
    """The shared recipe of a multi-run experiment: its options ``args`` and the ``shared`` settings."""
    recipe = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        val_size=args.val_size,
        device=args.device,
        threads=args.threads,
        amp=args.amp,
        tensorboard=False,
        progress=False,
        **shared,
    )
    recipe.validate()
    return recipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m capslib.ablation",
        description="Table 1 of Sabour et al. 2017 measured here: every variant, several seeds, one recipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="results/ablation", help="results folder (runs/*.json, summary.*)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[n for n in VARIANTS if n != "cnn-baseline"],
        choices=list(VARIANTS),
        help="which rows to train",
    )
    add_run_options(parser, epochs=3, batch_size=128)
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    checkpoints = Path(args.checkpoints) if args.checkpoints else None
    if args.status:
        rows = study_status(args.variants, args.seeds, out, checkpoints, args.epochs)
        print("\n".join(status_lines(rows, args.epochs)))
        return rows
    recipe = recipe_from(args)
    affine_set = None if args.no_affine else affine_mnist()[0]
    run_variants(args.variants, VARIANTS, args.seeds, recipe, out, affine_set, args.test_limit, checkpoints)
    results = load_results(out)
    rows, pairs = summarize(results), paired_tests(results, PAIRS)
    command = shlex.join(["python", "-m", "capslib.ablation", *argv])
    write_json_atomic(rows, out / "summary.json")
    write_json_atomic(pairs, out / "paired.json")
    text = summary_markdown(rows, command, pairs)
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    return rows


if __name__ == "__main__":
    main()
