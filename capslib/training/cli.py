"""``python -m capslib.train``: one option per :class:`TrainConfig` field, then :func:`capslib.training.fit`.

python -m capslib.train --epochs 50 --out runs/capsnet          # train (resumable)
python -m capslib.train --out runs/capsnet --resume             # continue where it stopped
"""

from __future__ import annotations

import argparse
import shlex
import sys
import typing
from dataclasses import fields

from ..baselines import MODEL_NAMES
from ..data import DATASETS
from .config import MULTIMNIST, ROUTING_NAMES, TrainConfig
from .distributed import world_from_env
from .faults import TrainingInterrupted
from .loop import fit

__all__ = ["main", "build_parser", "config_from_args", "resume_command"]

# The option of a field is named after it (out_dir: --out-dir), but for these, which keep the names
# the command has always had; NO_FLAG fields are set from Python.
FLAG_NAMES = {"out_dir": "--out", "reconstruction": "--decoder"}  # --decoder / --no-decoder
NO_FLAG = ("extra",)  # a free-form dict: no sensible command-line form
CHOICES = {"dataset": (*DATASETS, MULTIMNIST), "model": MODEL_NAMES, "routing": ROUTING_NAMES}


def main(argv: list[str] | None = None) -> dict:
    """Train as ``argv`` (default: ``sys.argv[1:]``) says; SIGINT/SIGTERM exit with 128 + the signal
    after one line that says how to resume. Returns :func:`fit`'s result."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    main_process = world_from_env().is_main  # under torchrun, rank 0 speaks for all
    try:
        result = fit(config=config_from_args(args), resume=args.resume)
    except TrainingInterrupted as stop:  # SIGINT/SIGTERM: one line, not a traceback
        if main_process:
            print(f"{stop}; continue with: {resume_command(argv, args.out_dir)}", file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_status) from None
    if main_process:
        print(
            f"best validation accuracy {result['best_val_accuracy']:.4f} at epoch {result['best_epoch']}; "
            f"checkpoints in {result['out_dir']} (best.pt, last.pt)"
        )
    return result


def build_parser() -> argparse.ArgumentParser:
    """An option per :class:`TrainConfig` field, its help the field's ``metadata["help"]``, plus ``--resume``.

    Booleans are ``--x/--no-x`` pairs (``--amp``, ``--no-tensorboard``, ``--no-decoder``); the
    others take a value of the field's type. Every option's help shows its default.
    """
    parser = argparse.ArgumentParser(
        prog="python -m capslib.train",
        description="Train CapsNet (Sabour et al. 2017) or a baseline CNN on MNIST, Fashion-MNIST or MultiMNIST; "
        "resumable; under torchrun, on several processes (DistributedDataParallel).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults, types = TrainConfig(), typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in NO_FLAG:
            continue
        flag = FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        kind = _flag_type(f.name, types[f.name])
        help_text = f.metadata["help"].replace("%", "%%")  # argparse %-formats help
        options = dict(dest=f.name, default=getattr(defaults, f.name), help=help_text)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            parser.add_argument(flag, type=kind, choices=CHOICES.get(f.name), **options)
    parser.add_argument("--resume", action="store_true", help="continue exactly where <out>/last.pt stopped")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig that parsed command-line ``args`` (from :func:`build_parser`) describe."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in NO_FLAG})


def resume_command(argv: list[str], out_dir: str) -> str:
    """The command that continues a run started with the options ``argv``: the same options (a
    resumed run takes its epochs, logging and devices from the command line), ``--out`` and ``--resume``."""
    options = [arg for arg in argv if arg != "--resume"]
    if "--out" not in options and not any(arg.startswith("--out=") for arg in options):
        options += ["--out", out_dir]
    return shlex.join(["python", "-m", "capslib.train", *options, "--resume"])


def _flag_type(name: str, annotation) -> type:
    """``int`` for ``int`` or ``int | None`` (likewise float, str, bool); a TypeError for others."""
    kinds = [t for t in typing.get_args(annotation) or (annotation,) if t is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (bool, int, float, str):
        raise TypeError(f"TrainConfig.{name}: no command-line form for {annotation}; add it to NO_FLAG")
    return kinds[0]


if __name__ == "__main__":
    main()
