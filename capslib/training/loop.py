"""Training: :func:`fit`, one function for notebooks and for ``python -m capslib.train`` (:mod:`capslib.training.cli`).

Honest protocol: the LAST ``val_size`` (5,000) training images validate and choose the best
epoch; the model trains on the others (55,000); the test set is never touched here (see
:mod:`capslib.evaluation`). Shift augmentation (up to 2 px) is applied to training batches only.

Checkpoints (``<out>/last.pt``) are written after every epoch and every ``checkpoint_minutes``
within one, atomically (write to a temporary file, then rename), with the optimizer, scheduler,
the data-order generator and the config, so an interrupted run resumes exactly. ``<out>/best.pt``
holds the model of the best validation epoch. What a checkpoint holds: :mod:`capslib.training.checkpoints`.
Ctrl-C or SIGTERM checkpoints before stopping; a non-finite loss stops the run before any
checkpoint holds the weights it touched; both without a per-step synchronisation: :mod:`capslib.training.faults`.

:func:`fit` reads top to bottom: settings, model, data, run state, then per epoch
:func:`train_one_epoch` (a :class:`~capslib.training.batches.BatchSource` makes the batches, the
step trains on them, :mod:`capslib.training.hooks` do the rest), validation and :func:`end_epoch`.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..evaluation.predict import accuracy
from ..utils import hardware_name, seed_everything, write_json_atomic
from .batches import BatchSource, load_data
from .checkpoints import EpochSums, RunState, load_last, remove_stale_temporaries, save_run
from .config import TrainConfig
from .distributed import World, join, leave, sum_across, world_from_env
from .faults import NonFiniteLossError, StopSignals, TrainingInterrupted, non_finite_loss
from .hooks import Hook, StepReport, StopAgreement, default_hooks
from .prepare import (
    build_model,
    check_world,
    set_up_device,
    start_run,
    update_average,
    with_overrides,
    with_resumed_settings,
)
from .step import make_step

__all__ = ["TrainConfig", "fit", "train_one_epoch", "end_epoch"]


def fit(
    model: nn.Module | None = None,
    train_set=None,
    val_set=None,
    config: TrainConfig | None = None,
    resume: bool = False,
    **overrides,
) -> dict:
    """Train ``model`` with Adam, exponential learning-rate decay and shift augmentation.

    Args:
        model: any capslib-style model: ``model(x, y)`` returns what its ``loss(output, targets,
            labels, reconstruction_weight)`` method takes (:meth:`capslib.CapsNet.loss`, a
            :mod:`capslib.baselines` CNN's cross-entropy); without a ``loss`` method, a
            :class:`capslib.CapsNetOutput` (trained with the CapsNet loss). None builds the model
            ``config.model`` names (a CapsNet, 36x36 for MultiMNIST), or on resume the checkpoint's.
        train_set, val_set: datasets of ``(image (C, H, W), label)``; None loads
            ``config.dataset`` and splits off the last ``config.val_size`` images to validate.
            For ``dataset="multimnist"`` these are MNIST digits, which pairs are made of.
        config: a :class:`TrainConfig` (never changed: fit works on a copy); keyword
            ``overrides`` replace its fields.
        resume: continue from ``<out_dir>/last.pt`` (a ``FileNotFoundError`` naming it if it is
            missing), with the checkpoint's settings for the model, the loss, the data and the
            optimisation (a printed note names those the call asked otherwise).

    Under ``torchrun`` each process trains on its share of every batch through
    ``DistributedDataParallel`` and rank 0 writes the files (:mod:`capslib.training.distributed`).

    SIGINT (Ctrl-C, Jupyter's interrupt) and SIGTERM finish the batch under way, write a mid-epoch
    checkpoint and raise :class:`capslib.training.faults.TrainingInterrupted`, a ``KeyboardInterrupt``;
    a NaN or infinite loss raises :class:`capslib.training.faults.NonFiniteLossError` and is never saved.

    Returns:
        A dict with ``history`` (one dict per epoch), ``best_val_accuracy``, ``best_epoch``,
        ``out_dir`` and ``model`` (the trained model, last epoch's weights; with ``ema_decay``
        the averaged model, whose weights validated and went into ``best.pt``).
    """
    config = with_overrides(config, overrides)  # a copy: the caller's config is never changed
    world = world_from_env()  # torchrun's processes; one process: World()
    check_world(config, world)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        remove_stale_temporaries(out_dir)  # left by a write that was killed; never a checkpoint
    config, device = set_up_device(config, world)
    joined = join(world, device)
    try:
        return _fit(model, train_set, val_set, config, resume, world, device)
    finally:
        if joined:
            leave()


def _fit(model, train_set, val_set, config: TrainConfig, resume: bool, world: World, device: torch.device) -> dict:
    """:func:`fit` once the settings, the device and the process group are set up."""
    out_dir = Path(config.out_dir)
    checkpoint = load_last(out_dir) if resume else None
    if checkpoint is not None:
        config, notes = with_resumed_settings(config, checkpoint["config"])
        if notes and world.is_main:
            print(f"resuming keeps the run's own settings: {', '.join(notes)}", flush=True)
    seed_everything(config.seed)
    model = build_model(model, config, checkpoint).to(device)
    data = load_data(train_set, val_set, config, getattr(model, "num_classes", None), device)
    source = BatchSource(data, config, world, device)
    run = start_run(model, config, checkpoint)
    run.batches_per_epoch = source.num_batches
    if world.rank > 0:  # the saved sums are all processes' (rank 0 saved them); they count once
        run.partial_epoch = {}
    if checkpoint is not None and world.is_main:
        print(f"resuming {out_dir / 'last.pt'}: {_position(run, config, source)}", flush=True)
    if world.is_main:
        write_json_atomic(asdict(config), out_dir / "config.json")
    step = make_step(run, config, device, world)

    # SIGINT and SIGTERM stop the loop after the batch under way, checkpointed (capslib.training.faults).
    with StopSignals() as signals:
        hooks = default_hooks(config, world, device, getattr(run.model, "loss_name", "margin"), signals)
        stopping = next(hook for hook in hooks if isinstance(hook, StopAgreement))
        with ExitStack() as closing:  # the progress bar, the TensorBoard writer: closed however the loop ends
            for hook in hooks:
                closing.callback(hook.close)
            while run.epoch < config.epochs:
                epoch_start = time.monotonic()
                sums = train_one_epoch(run, source, step, hooks, config, world)
                if sums is None:  # stopped part-way (stop_after_batches, a signal): checkpointed
                    break
                val_accuracy = accuracy(run.eval_model, data.val_x, data.val_y, config.eval_batch_size)
                seconds = time.monotonic() - epoch_start
                record = epoch_record(run, sums, val_accuracy, len(data.val_x), seconds, config.amp)
                end_epoch(run, record, config, hooks, world, data.val_x)
                if stopping.stop_at_epoch_end():
                    break
    signum = signals.received
    if signum is None and stopping.agreed and not stopping.stop_after_reached:
        signum = signal.SIGTERM  # under torchrun: another process was signalled, and this one stopped with it
    if signum is not None and run.epoch < config.epochs:
        raise TrainingInterrupted(signum, f"stopped at {_position(run, config, source)}; saved {out_dir / 'last.pt'}")
    best = {"best_val_accuracy": run.best_val_accuracy, "best_epoch": run.best_epoch}
    return {"history": run.history, **best, "out_dir": str(out_dir), "model": run.eval_model}


def train_one_epoch(
    run: RunState, source: BatchSource, step: Callable[..., dict], hooks: list[Hook], config: TrainConfig, world: World
) -> dict | None:
    """Train epoch ``run.epoch``: all of it, or its rest when resumed mid-epoch. When a hook asks
    (``checkpoint_minutes``, a stop), ``last.pt`` saves the run mid-epoch: the epoch's position,
    its generator and its sums so far.

    Returns:
        The epoch's sums (``loss``, ``classification``, ``reconstruction``, ``correct``, ``seen``;
        the losses summed over images), or None if it stopped part-way.

    Raises:
        NonFiniteLossError: for a NaN or infinite loss, before any checkpoint holds its weights.
    """
    epoch, first_batch, out_dir = run.epoch, run.batch_index, Path(config.out_dir)
    sums = EpochSums(run.partial_epoch if first_batch > 0 else {}, source.device)
    non_finite = functools.partial(non_finite_loss, epoch, config.epochs, source.num_batches, out_dir)

    def read() -> dict:  # the sums so far: read back when shown or saved, never every step
        totals, bad_step = sums.read()
        if bad_step is not None:
            raise non_finite(first_batch + bad_step, skipped=False)
        return totals

    run.model.train()
    for hook in hooks:
        hook.start_epoch(epoch, first_batch, source.num_batches)
    for batch_index, batch in source.epoch(epoch, first_batch, run.generator_state):
        try:
            stats = step(batch.images, batch.labels, targets=batch.targets)
        except NonFiniteLossError:  # train_step's check on the CPU: the step was not taken
            raise non_finite(batch_index, skipped=True) from None
        if run.ema is not None:
            update_average(run.ema, run.model)
        sums.add(stats, len(batch.labels))
        report = StepReport(epoch, batch_index, source.num_batches, stats, read)
        for hook in hooks:
            hook.after_step(report)
        if (report.save or report.stop) and not report.last:
            run.batch_index, run.generator_state = batch_index + 1, source.generator.get_state()
            run.partial_epoch = sum_across(read(), world, source.device)
            if world.is_main:
                save_run(run, config, out_dir)
            for hook in hooks:
                hook.saved()
            if report.stop:
                return None
    return sum_across(read(), world, source.device)


def epoch_record(
    run: RunState, sums: dict, val_accuracy: float, num_val: int, seconds: float, amp: bool = False
) -> dict:
    """The history entry of epoch ``run.epoch`` from its training sums and validation accuracy (``amp``:
    whether it trained under autocast, which a resumed run may switch)."""
    return {
        "epoch": run.epoch + 1,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": sums["loss"] / sums["seen"],
        f"train_{getattr(run.model, 'loss_name', 'margin')}_loss": sums["classification"] / sums["seen"],
        "train_reconstruction_loss": sums["reconstruction"] / sums["seen"],
        "train_accuracy": sums["correct"] / sums["seen"],
        "train_examples": sums["seen"],  # images (MultiMNIST: pairs) trained on in this epoch
        "val_accuracy": val_accuracy,
        "val_errors": round((1 - val_accuracy) * num_val),
        "epoch_seconds": seconds,  # since this epoch (re)started: a resumed epoch counts only its rest
        "elapsed_seconds": run.elapsed_before + time.monotonic() - run.started,  # the whole run so far
        # where this epoch ran: a resumed run may change machines (and speed) between epochs
        "hardware": hardware_name(next(run.model.parameters()).device),
        "amp": amp,
    }


def end_epoch(
    run: RunState, record: dict, config: TrainConfig, hooks: list[Hook], world: World, val_x: torch.Tensor
) -> None:
    """Record the epoch, decay the learning rate, checkpoint (``best.pt`` too if validation
    improved), tell the hooks and print one line."""
    run.history.append(record)
    run.scheduler.step()
    improved = record["val_accuracy"] > run.best_val_accuracy
    if improved:
        run.best_val_accuracy, run.best_epoch = record["val_accuracy"], record["epoch"]
    run.epoch, run.batch_index, run.generator_state, run.partial_epoch = run.epoch + 1, 0, None, {}
    if world.is_main:  # rank 0 writes the files and the line
        save_run(run, config, Path(config.out_dir), best=improved)
        write_json_atomic(run.history, Path(config.out_dir) / "history.json")
    for hook in hooks:
        hook.saved()
        hook.end_epoch(record, run.eval_model, val_x)
    if not world.is_main:
        return
    message = (
        f"epoch {record['epoch']:3d}/{config.epochs}  loss {record['train_loss']:.4f}  "
        f"train acc {record['train_accuracy']:.4f}  val acc {record['val_accuracy']:.4f} "
        f"({record['val_errors']} errors){' *' if improved else ''}  lr {record['lr']:.2e}  "
        f"{record['epoch_seconds']:.0f}s"
    )
    if config.progress:
        tqdm.write(message)  # above the progress bars, not through them
    else:
        print(message, flush=True)


def _position(run: RunState, config: TrainConfig, source: BatchSource) -> str:
    """Where ``run`` continues, for people: "epoch 2/50, 120 of its 430 batches done"."""
    return f"epoch {run.epoch + 1}/{config.epochs}, {run.batch_index} of its {source.num_batches} batches done"
