"""A training run's state, and the checkpoints that save it: written atomically, restored exactly.

:func:`capslib.training.fit` keeps what a run carries from one step to the next in a :class:`RunState`
and saves it to ``<out>/last.pt`` (after every epoch, and within one every ``checkpoint_minutes``)
and ``<out>/best.pt`` (the epoch that validated best). A checkpoint is a plain dict, which
``torch.load(path, weights_only=True)`` reads. ``last.pt`` holds all of it (about 100 MB for the
default CapsNet: the weights, 33 MB, and Adam's two moments, which an exact resume needs);
``best.pt`` only ships and never resumes, so it leaves out the keys marked (resume):

    model                 the weights that validate and ship (with ema_decay: the average)
    optimizer, scheduler  their state dicts (resume)
    config                the run's TrainConfig, as a dict
    epoch, batch_index    where to continue: the epoch to run next (or the one in progress) and how
                          many of its batches are done
    generator_state       mid-epoch: the state of the epoch's data-order and augmentation generator (resume)
    partial_epoch         mid-epoch: the epoch's loss and accuracy sums so far (resume)
    rng_state             torch's global random state (CPU, and each CUDA device's where CUDA is in
                          use), which dropout draws from: a resumed baseline CNN drops the same units (resume)
    history, best_val_accuracy, best_epoch, elapsed_seconds, torch_version
    model_config          rebuilds the model: capslib.pretrained.model_from_config (load_checkpoint reads it)
    train_model           with ema_decay: the raw weights, which keep training on resume (resume)
    ema_n_averaged        with ema_decay: how many steps the average holds (resume)

Reading one: a file that is truncated, corrupt, holds pickled objects or lacks these keys gives a
``ValueError`` naming it (:func:`capslib.pretrained.read_torch_file`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..pretrained import PRETRAINED_NAME, pretrained_dir, read_torch_file
from ..utils import atomic_write, stale_temporaries

__all__ = [
    "RunState",
    "EpochSums",
    "to_checkpoint",
    "restore",
    "save_run",
    "load_last",
    "save_atomic",
    "initial_weights",
    "remove_stale_temporaries",
]


@dataclass
class RunState:
    """Everything a training run carries from one step to the next: what a checkpoint holds."""

    model: nn.Module  # the weights that train
    optimizer: torch.optim.Optimizer  # over model's parameters
    scheduler: torch.optim.lr_scheduler.LRScheduler  # steps once per epoch
    ema: nn.Module | None = None  # an AveragedModel of model (ema_decay), else None
    history: list[dict] = field(default_factory=list)  # one record per finished epoch
    epoch: int = 0  # the epoch to run next (or the one in progress)
    batch_index: int = 0  # batches of that epoch already done (0 at an epoch boundary)
    generator_state: torch.Tensor | None = None  # mid-epoch: the epoch's generator, to replay the rest
    partial_epoch: dict = field(default_factory=dict)  # mid-epoch: the epoch's sums so far
    best_val_accuracy: float = -1.0  # below any accuracy: the first epoch is the best so far
    best_epoch: int = -1  # 1-based epoch of best_val_accuracy
    batches_per_epoch: int | None = None  # this process's batches an epoch (for --status), once known
    elapsed_before: float = 0.0  # seconds of training before this call (a resumed run's earlier calls)
    started: float = field(default_factory=time.monotonic)  # when this call started training

    @property
    def eval_model(self) -> nn.Module:
        """The weights that validate, go into checkpoints as ``model`` and ship: the average with EMA."""
        return self.ema.module if self.ema is not None else self.model


class EpochSums:
    """An epoch's training sums (a checkpoint's ``partial_epoch``): those carried over from a resumed
    checkpoint, plus running sums kept on the device and read back only when shown or saved
    (reading them every step would stall a GPU).

    The running sums also count the steps whose loss was finite, up to the first that was not:
    every read finds a non-finite loss, and its step, with no check of its own (capslib.training.faults).
    """

    def __init__(self, carried: dict, device: torch.device):
        carried = dict(carried)
        if "margin" in carried:  # a mid-epoch last.pt written before the classification loss had its own name
            carried["classification"] = carried.pop("margin")
        self.carried = {"loss": 0.0, "classification": 0.0, "reconstruction": 0.0, "correct": 0, "seen": 0, **carried}
        self.running = torch.zeros(5, dtype=torch.float64, device=device)  # loss, classif., recon, correct, finite
        self.finite = torch.ones((), dtype=torch.bool, device=device)  # False from the first non-finite loss on
        self.steps, self.seen = 0, self.carried["seen"]

    def add(self, stats: dict, batch_size: int) -> None:
        """Add one step's ``stats`` (:func:`capslib.training.train_step`'s batch means), on the device."""
        with torch.no_grad():
            losses = (
                torch.stack([stats["loss"], stats["classification"], stats["reconstruction"]]).double() * batch_size
            )
            self.finite &= torch.isfinite(losses).all()
            self.running += torch.cat([losses, stats["correct"].double().view(1), self.finite.double().view(1)])
        self.steps += 1
        self.seen += batch_size

    def read(self) -> tuple[dict, int | None]:
        """The epoch's sums so far (one read-back), and which step of this call (0-based) had the
        first non-finite loss (None: none had)."""
        loss, classification, recon, correct, finite_steps = self.running.tolist()
        totals = {
            "loss": self.carried["loss"] + loss,
            "classification": self.carried["classification"] + classification,
            "reconstruction": self.carried["reconstruction"] + recon,
            "correct": self.carried["correct"] + round(correct),
            "seen": self.seen,
        }
        return totals, None if finite_steps == self.steps else round(finite_steps)


def to_checkpoint(run: RunState, config) -> dict:
    """The checkpoint of ``run`` at its position (``run.epoch``, ``run.batch_index``); ``config`` a TrainConfig."""
    model_config = dict(getattr(run.model, "config", {}))
    if model_config and hasattr(run.model, "routing_iterations"):  # CapsNet's, which a user may change
        model_config["routing_iterations"] = run.model.routing_iterations
    checkpoint = {
        "model": run.eval_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "config": asdict(config),
        "epoch": run.epoch,
        "batch_index": run.batch_index,
        "generator_state": run.generator_state,
        "rng_state": global_rng_state(),
        "partial_epoch": run.partial_epoch,
        "history": run.history,
        "best_val_accuracy": run.best_val_accuracy,
        "best_epoch": run.best_epoch,
        "batches_per_epoch": run.batches_per_epoch,
        "elapsed_seconds": run.elapsed_before + time.monotonic() - run.started,
        "torch_version": str(torch.__version__),
    }
    if model_config:
        checkpoint["model_config"] = model_config
    if run.ema is not None:
        checkpoint["train_model"] = run.model.state_dict()
        checkpoint["ema_n_averaged"] = int(run.ema.n_averaged)
    return checkpoint


def global_rng_state() -> dict:
    """torch's global random state: ``{"cpu": ByteTensor, "cuda": [ByteTensor per device]}``
    (``"cuda"`` only once CUDA is initialised). The data order has a generator of its own."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    """Restore :func:`global_rng_state` (CUDA states only where this machine has as many devices)."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def restore(run: RunState, checkpoint: dict) -> None:
    """Put a freshly built ``run`` (same model, optimizer and settings) where ``checkpoint`` left off."""
    run.model.load_state_dict(checkpoint.get("train_model", checkpoint["model"]))
    if run.ema is not None:
        run.ema.module.load_state_dict(checkpoint["model"])
        run.ema.n_averaged.fill_(checkpoint["ema_n_averaged"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.history = checkpoint["history"]
    run.epoch, run.batch_index = checkpoint["epoch"], checkpoint["batch_index"]
    # Checkpoints written at an epoch boundary by older versions may lack the mid-epoch keys.
    run.generator_state = checkpoint.get("generator_state")
    run.partial_epoch = checkpoint.get("partial_epoch", {})
    if "rng_state" in checkpoint:
        set_global_rng_state(checkpoint["rng_state"])
    run.best_val_accuracy, run.best_epoch = checkpoint["best_val_accuracy"], checkpoint["best_epoch"]
    run.elapsed_before = checkpoint["elapsed_seconds"]


# What only resuming needs: best.pt, which ships and never resumes, leaves it out (two thirds of a
# checkpoint: the optimizer holds two numbers per weight).
RESUME_ONLY = (
    "optimizer",
    "scheduler",
    "generator_state",
    "rng_state",
    "partial_epoch",
    "train_model",
    "ema_n_averaged",
)
RUN_FILES = ("last.pt", "best.pt", "config.json", "history.json")  # what fit writes into <out>, atomically


def save_run(run: RunState, config, out_dir: Path, best: bool = False) -> None:
    """Write ``run`` to ``<out_dir>/last.pt``, and (without what only resuming needs) to ``best.pt``
    too when ``best``. best.pt goes first: if its write fails, last.pt still describes the best.pt
    on disk, and a resume replays the epoch that would have replaced it."""
    checkpoint = to_checkpoint(run, config)
    if best:
        save_atomic({k: v for k, v in checkpoint.items() if k not in RESUME_ONLY}, out_dir / "best.pt")
    save_atomic(checkpoint, out_dir / "last.pt")


# A checkpoint without these cannot continue a run (restore reads them).
RESUME_KEYS = ("model", "optimizer", "scheduler", "config", "epoch", "batch_index", "history", "best_val_accuracy")


def load_last(out_dir: Path, mmap: bool = False) -> dict:
    """The checkpoint ``<out_dir>/last.pt`` (tensors on the CPU), to resume from; ``mmap=True`` maps
    the file rather than reading it (for a caller that only wants the position, e.g. ``--status``).

    Raises:
        FileNotFoundError: naming the path, when there is none (a typo in ``--out``?).
        ValueError: naming the file, when it is not a capslib training checkpoint.
    """
    path = Path(out_dir) / "last.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"nothing to resume: no checkpoint at {path}. Is the output folder (--out, out_dir) right? "
            "To start a new run there, leave out --resume (resume=True)."
        )
    expected = "a capslib training checkpoint (the last.pt that python -m capslib.train writes)"
    checkpoint = read_torch_file(path, expected, mmap=mmap)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} is not {expected}: it holds a {type(checkpoint).__name__}, not a dict")
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} is not {expected}: it lacks {missing}")
    return checkpoint


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove the temporary files a killed write of a run file left in ``out_dir`` (and none other)."""
    stale = stale_temporaries(out_dir, RUN_FILES)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def initial_weights(source: str) -> dict:
    """State dict (float32) from ``"pretrained"``, a training checkpoint or a saved state dict."""
    path = pretrained_dir() / f"{PRETRAINED_NAME}.pt" if source == "pretrained" else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"init_from: no weights at {path}")
    expected = "weights to start from: a capslib training checkpoint or a state dict of CapsNet weights"
    state = read_torch_file(path, expected)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"init_from: {path} is not {expected}, got a {type(state).__name__} that is no state dict")
    return {k: v.float() for k, v in state.items()}
