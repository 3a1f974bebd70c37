"""A training run's state, and the checkpoints that save it: written atomically, restored exactly.

:func:`capslib.train.fit` keeps what a run carries from one step to the next in a :class:`RunState`
and saves it to ``<out>/last.pt`` (after every epoch, and within one every ``checkpoint_minutes``)
and ``<out>/best.pt`` (the epoch that validated best). A checkpoint is a plain dict, which
``torch.load(path, weights_only=True)`` reads:

    model                 the weights that validate and ship (with ema_decay: the average)
    optimizer, scheduler  their state dicts
    config                the run's TrainConfig, as a dict
    epoch, batch_index    where to continue: the epoch to run next (or the one in progress) and how
                          many of its batches are done
    generator_state       mid-epoch: the state of the epoch's data-order and augmentation generator
    partial_epoch         mid-epoch: the epoch's loss and accuracy sums so far
    history, best_val_accuracy, best_epoch, elapsed_seconds, torch_version
    model_config          CapsNet(**model_config) rebuilds the model (capslib.load_checkpoint reads it)
    train_model           with ema_decay: the raw weights, which keep training on resume
    ema_n_averaged        with ema_decay: how many steps the average holds
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .pretrained import PRETRAINED_NAME, pretrained_dir
from .utils import atomic_write

__all__ = [
    "RunState",
    "to_checkpoint",
    "restore",
    "save_run",
    "load_last",
    "save_atomic",
    "write_json_atomic",
    "initial_weights",
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
    elapsed_before: float = 0.0  # seconds of training before this call (a resumed run's earlier calls)
    started: float = field(default_factory=time.monotonic)  # when this call started training

    @property
    def eval_model(self) -> nn.Module:
        """The weights that validate, go into checkpoints as ``model`` and ship: the average with EMA."""
        return self.ema.module if self.ema is not None else self.model


def to_checkpoint(run: RunState, config) -> dict:
    """The checkpoint of ``run`` at its position (``run.epoch``, ``run.batch_index``); ``config`` a TrainConfig."""
    model_config = dict(getattr(run.model, "config", {}))
    if model_config:
        model_config["routing_iterations"] = getattr(run.model, "routing_iterations", None)
    checkpoint = {
        "model": run.eval_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "config": asdict(config),
        "epoch": run.epoch,
        "batch_index": run.batch_index,
        "generator_state": run.generator_state,
        "partial_epoch": run.partial_epoch,
        "history": run.history,
        "best_val_accuracy": run.best_val_accuracy,
        "best_epoch": run.best_epoch,
        "elapsed_seconds": run.elapsed_before + time.monotonic() - run.started,
        "torch_version": str(torch.__version__),
    }
    if model_config:
        checkpoint["model_config"] = model_config
    if run.ema is not None:
        checkpoint["train_model"] = run.model.state_dict()
        checkpoint["ema_n_averaged"] = int(run.ema.n_averaged)
    return checkpoint


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
    run.best_val_accuracy, run.best_epoch = checkpoint["best_val_accuracy"], checkpoint["best_epoch"]
    run.elapsed_before = checkpoint["elapsed_seconds"]


def save_run(run: RunState, config, out_dir: Path, best: bool = False) -> None:
    """Write ``run`` to ``<out_dir>/last.pt``, and to ``best.pt`` too when ``best``."""
    checkpoint = to_checkpoint(run, config)
    if best:
        save_atomic(checkpoint, out_dir / "best.pt")
    save_atomic(checkpoint, out_dir / "last.pt")


def load_last(out_dir: Path) -> dict | None:
    """The checkpoint ``<out_dir>/last.pt`` (tensors on the CPU), or None if the run has none yet."""
    path = Path(out_dir) / "last.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(obj, path: Path) -> None:
    """``obj`` as indented JSON at ``path``, written atomically like :func:`save_atomic`."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def initial_weights(source: str) -> dict:
    """State dict (float32) from ``"pretrained"``, a training checkpoint or a saved state dict."""
    path = pretrained_dir() / f"{PRETRAINED_NAME}.pt" if source == "pretrained" else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"init_from: no weights at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    return {k: v.float() for k, v in state.items()}
