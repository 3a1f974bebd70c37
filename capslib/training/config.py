"""The settings of a training run (:class:`TrainConfig`) and the command line built from them.

``python -m capslib.train`` has one option per field, named after it (``batch_size``:
``--batch-size``); its help is the comment after the field, so the two never disagree.
"""

from __future__ import annotations

import argparse
import inspect
import io
import tokenize
import typing
from dataclasses import dataclass, field, fields

from ..baselines import MODEL_NAMES
from ..data.datasets import DATASETS

__all__ = ["TrainConfig", "build_parser", "config_from_args"]


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint and in ``<out>/config.json``.

    The comment after each field is also its help in ``python -m capslib.train --help``.
    """

    model: str = "capsnet"  # capsnet, or a baseline CNN: cnn-baseline (the paper's, 35.4M) or cnn-small (1.1M)
    epochs: int = 50  # passes over the 55,000 training images
    batch_size: int = 128  # images per training step (the paper's official code uses 128)
    lr: float = 1e-3  # Adam's learning rate at epoch 0
    lr_decay: float = 0.96  # multiply the learning rate by this after every epoch
    routing_iterations: int = 3  # routing iterations of the CapsNet fit() builds (when given no model)
    reconstruction: bool = True  # the reconstruction decoder of the CapsNet fit() builds (when given no model)
    reconstruction_weight: float = 0.0005  # reconstruction loss weight (paper: small, not to dominate the margin loss)
    max_shift: int = 2  # shift augmentation of training images, in pixels (0 turns it off; multimnist: its own 4)
    dataset: str = "mnist"  # mnist, fashion-mnist, or multimnist (pairs of overlapping digits, 36x36)
    val_size: int = 5000  # the last val_size training images validate
    train_limit: int | None = None  # use only the first N training images (quick experiments; None: all)
    device: str = "auto"  # auto: CUDA, then MPS, then CPU; or cuda, mps, cpu
    seed: int = 0  # seeds model init, data order and augmentation
    # The config records the threads actually used, so a CPU run can be repeated bit for bit.
    threads: int | None = None  # CPU threads (None: torch's default); fixed threads + seed = deterministic on CPU
    out_dir: str = "runs/capsnet"  # checkpoints, config.json, history.json, TensorBoard logs (tb/)
    checkpoint_minutes: float = 10.0  # also checkpoint within an epoch this often (last.pt ~100 MB: optimizer included)
    # On CPUs with native bf16 (AVX512-BF16, AMX) the 36x36 MultiMNIST step runs about 2x faster.
    amp: bool = False  # bf16 autocast on CUDA and CPU (routing, squash and the losses stay fp32); ignored on MPS
    tensorboard: bool = True  # write TensorBoard logs to <out>/tb
    eval_batch_size: int = 500  # batch size for validation
    progress: bool = True  # tqdm progress bars (without them: one line per epoch)
    init_from: str | None = None  # start from these weights: "pretrained", a checkpoint or a state dict
    stop_after_batches: int | None = None  # stop (checkpointed, as if killed) after this many batches
    # Polyak averaging: with ema_decay, validation, best.pt and the returned model use the AVERAGED weights.
    ema_decay: float | None = None  # validate and ship a moving average of the weights, e.g. 0.999 per step
    compile: bool = False  # opt-in torch.compile of the training step's model (eager if it cannot compile)
    # Slices give the same update (gradients summed) in less memory: for batches that do not fit.
    micro_batch: int | None = None  # forward/backward in slices of this many images (None: the whole batch)
    extra: dict = field(default_factory=dict)  # free-form notes recorded with the run (no CLI flag)

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work."""
        checks = [
            (self.model in MODEL_NAMES, f"model must be one of {MODEL_NAMES}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.routing_iterations >= 1, "routing_iterations must be >= 1"),
            (self.reconstruction_weight >= 0, "reconstruction_weight must be >= 0"),
            (self.max_shift >= 0, "max_shift must be >= 0"),
            (self.checkpoint_minutes > 0, "checkpoint_minutes must be > 0"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be None or in (0, 1)"),
            (self.micro_batch is None or self.micro_batch >= 1, "micro_batch must be None or >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {self}")


# The CLI has one option per TrainConfig field, named after it (out_dir: --out-dir), its help the
# field's comment. These keep the names the CLI has always had; NO_FLAG fields are set from Python.
FLAG_NAMES = {"out_dir": "--out", "reconstruction": "--decoder"}  # --decoder / --no-decoder
NO_FLAG = ("extra",)  # a free-form dict: no sensible command-line form
MULTIMNIST = "multimnist"
"""``--dataset multimnist``: pairs of overlapping MNIST digits made on the fly (:mod:`capslib.multimnist`)."""
CHOICES = {"dataset": (*DATASETS, MULTIMNIST), "model": MODEL_NAMES}


def build_parser() -> argparse.ArgumentParser:
    """``python -m capslib.train``: an option per :class:`TrainConfig` field, plus ``--resume``.

    Booleans are ``--x/--no-x`` pairs (``--amp``, ``--no-tensorboard``, ``--no-decoder``); the
    others take a value of the field's type. Every option's help shows its default.
    """
    parser = argparse.ArgumentParser(
        prog="python -m capslib.train",
        description="Train CapsNet (Sabour et al. 2017) or a baseline CNN on MNIST, Fashion-MNIST or MultiMNIST; "
        "resumable; under torchrun, on several processes (DistributedDataParallel).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults, types, comments = TrainConfig(), typing.get_type_hints(TrainConfig), _field_comments(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in NO_FLAG:
            continue
        flag = FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        kind = _flag_type(f.name, types[f.name])
        help_text = comments.get(f.name, "").replace("%", "%%")  # argparse %-formats help
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


def _flag_type(name: str, annotation) -> type:
    """``int`` for ``int`` or ``int | None`` (likewise float, str, bool); a TypeError for others."""
    kinds = [t for t in typing.get_args(annotation) or (annotation,) if t is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (bool, int, float, str):
        raise TypeError(f"TrainConfig.{name}: no command-line form for {annotation}; add it to NO_FLAG")
    return kinds[0]


def _field_comments(cls) -> dict[str, str]:
    """``{field name: the comment after it}`` from the source of the dataclass ``cls``."""
    try:
        source = inspect.getsource(cls)
    except OSError:  # no source (a frozen app): options without help, still working
        return {}
    names = {f.name for f in fields(cls)}
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        name = token.line.split(":", 1)[0].strip()  # "    epochs: int = 50  # ..." -> "epochs"
        if token.type == tokenize.COMMENT and name in names:
            comments[name] = token.string.lstrip("#").strip()
    return comments
