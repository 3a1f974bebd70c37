"""Training: one function for notebooks (:func:`fit`) and a CLI on top of it.

    python -m capslib.train --epochs 50 --out runs/capsnet          # train (resumable)
    python -m capslib.train --out runs/capsnet --resume             # continue where it stopped

Honest protocol: the LAST ``val_size`` (5,000) training images validate and choose the best
epoch; the model trains on the others (55,000); the test set is never touched here (see
:mod:`capslib.evaluate`). Shift augmentation (up to 2 px) is applied to training batches only.

Checkpoints (``<out>/last.pt``) are written after every epoch and every ``checkpoint_minutes``
within one, atomically (write to a temporary file, then rename), with the optimizer, scheduler,
the data-order generator and the config, so an interrupted run resumes exactly. ``<out>/best.pt``
holds the model of the best validation epoch. What a checkpoint holds: :mod:`capslib.checkpoints`.
Ctrl-C or SIGTERM checkpoints before stopping; a non-finite loss stops the run before any
checkpoint holds the weights it touched; both without a per-step synchronisation: :mod:`capslib.faults`.

:func:`fit` reads top to bottom: settings, model, data, run state, then per epoch
:func:`train_one_epoch`, :func:`accuracy` on the validation set and :func:`end_epoch` (history,
learning-rate decay, checkpoints). The CLI's options are generated from :class:`TrainConfig`.
"""

from __future__ import annotations

import functools
import math
import shlex
import signal
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ..baselines import BASELINES, baseline_cnn
from ..data.datasets import load_dataset, random_shift, split_train_val, to_tensors
from ..data.multimnist import CANVAS, VALIDATION_SEED, multimnist_test_set, pairs_for
from ..functional import (
    check_image_range,
    check_label_range,
    class_scores,
    correct_predictions,
    margin_loss,
    reconstruction_loss,
)
from ..model import CapsNet
from ..pretrained import model_from_config
from ..utils import eval_mode, get_device, seed_everything
from .checkpoints import (
    EpochSums,
    RunState,
    initial_weights,
    load_last,
    remove_stale_temporaries,
    restore,
    save_atomic,
    save_run,
    write_json_atomic,
)
from .compiling import compiled_or_eager
from .config import MULTIMNIST, TrainConfig, build_parser, config_from_args
from .distributed import World, agree, device_for, join, leave, share, sum_across, world_from_env
from .faults import NonFiniteLossError, StopSignals, TrainingInterrupted, non_finite_loss, reads_are_free

# TrainConfig (capslib.config) and save_atomic (capslib.checkpoints) are importable from here too.
__all__ = ["TrainConfig", "fit", "train_step", "total_loss", "save_atomic", "build_parser", "main"]


def total_loss(output, images: torch.Tensor, labels: torch.Tensor, reconstruction_weight: float = 0.0005):
    """Margin loss + ``reconstruction_weight`` x reconstruction loss (Section 4.1); for a baseline
    CNN's logits, cross-entropy (the paper's baseline loss).

    Args:
        output: a :class:`capslib.CapsNetOutput` (``lengths`` ``(B, N_out)``, ``reconstructions``
            ``(B, C, H, W)`` or None), or logits ``(B, N_out)`` of a :mod:`capslib.baselines` CNN.
        images: ``(B, C, H, W)`` the (augmented) inputs the model saw.
        labels: ``(B,)`` true classes.

    Returns:
        ``(total, classification, reconstruction)`` scalar tensors: the classification loss is the
        margin loss (or the cross-entropy), the reconstruction loss 0 without a decoder.
    """
    if isinstance(output, torch.Tensor):  # a baseline CNN's logits
        cross_entropy = torch.nn.functional.cross_entropy(output.float(), labels)
        return cross_entropy, cross_entropy, cross_entropy.new_zeros(())
    margin = margin_loss(output.lengths.float(), labels)
    if output.reconstructions is None:
        recon = margin.new_zeros(())
    else:
        recon = reconstruction_loss(output.reconstructions.float(), images.float())
    return margin + reconstruction_weight * recon, margin, recon


def train_step(
    model,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    reconstruction_weight: float = 0.0005,
    micro_batch: int | None = None,
    amp: bool = False,
    targets: torch.Tensor | None = None,
) -> dict:
    """One optimizer step on a batch: forward, margin + reconstruction loss, backward, step.

    With ``micro_batch``, forward and backward run on slices of that many images and their
    gradients are summed, each slice's loss weighted by its share of the batch: the gradient is
    the batch mean's, as without slicing (to float tolerance), for any model whose examples do not
    interact (no batch norm).

    Args:
        model: ``model(x, y)`` returns ``lengths`` ``(B, N_out)`` and ``reconstructions`` (or None).
        images: ``(B, C, H, W)``; labels: ``(B,)``, or ``(B, K)`` for ``K`` digits per image (MultiMNIST).
        amp: bf16 autocast on the images' device (CUDA or CPU); routing, squash and the losses stay fp32.
        targets: what the decoder must redraw: None for the images themselves; ``(B, K, C, H, W)``,
            each digit on its own, with ``(B, K)`` labels.

    Returns:
        ``loss``, ``margin``, ``reconstruction`` (batch means) and ``correct`` (count), detached
        tensors on the batch's device: reading them does not wait for the device.

    Raises:
        NonFiniteLossError: on the CPU, for a NaN or infinite loss, before the step (which would make
            every weight NaN). Elsewhere the check would wait for the device: fit does it at read-backs.
    """
    if micro_batch is not None and micro_batch < 1:
        raise ValueError(f"micro_batch must be None or >= 1, got {micro_batch}")
    batch = len(labels)
    size = micro_batch or batch
    optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(4, device=labels.device)  # loss, margin, reconstruction (batch means), correct
    wanted = (images if targets is None else targets).split(size)  # what each slice's decoder must redraw
    chunks = zip(images.split(size), labels.split(size), wanted, strict=True)  # ((b, C, H, W), (b,), ...) slices
    for x, y, t in chunks:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
            output = model(x, y)  # decoder masked with the TRUE label
        loss, margin, recon = total_loss(output, t, y, reconstruction_weight)
        share = len(y) / batch
        (loss * share if share != 1 else loss).backward()
        with torch.no_grad():
            correct = correct_predictions(class_scores(output), y).sum()
            sums += torch.stack([loss * share, margin * share, recon * share, correct.float()])
    if reads_are_free(sums) and not torch.isfinite(sums[:3]).all():
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"non-finite loss {sums[0].item()}: the step was skipped, the weights are unchanged")
    optimizer.step()
    loss, margin, recon, correct = sums.unbind()
    return {"loss": loss, "margin": margin, "reconstruction": recon, "correct": correct}


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
        model: any capslib-style model: ``model(x, y)`` returns an object with ``lengths``
            ``(B, N_out)`` and ``reconstructions`` (or None), or logits ``(B, N_out)`` (a
            :mod:`capslib.baselines` CNN, trained with cross-entropy). None builds the model
            ``config.model`` names (a CapsNet, 36x36 for MultiMNIST), or on resume the checkpoint's.
        train_set, val_set: datasets of ``(image (C, H, W), label)``; None loads
            ``config.dataset`` and splits off the last ``config.val_size`` images to validate.
            For ``dataset="multimnist"`` these are MNIST digits, which pairs are made of.
        config: a :class:`TrainConfig` (never changed: fit works on a copy); keyword
            ``overrides`` replace its fields.
        resume: continue from ``<out_dir>/last.pt`` (a ``FileNotFoundError`` naming it if it is missing).

    Under ``torchrun`` each process trains on its share of every batch through
    ``DistributedDataParallel`` and rank 0 writes the files (:mod:`capslib.distributed`).

    SIGINT (Ctrl-C, Jupyter's interrupt) and SIGTERM finish the batch under way, write a mid-epoch
    checkpoint and raise :class:`capslib.faults.TrainingInterrupted`, a ``KeyboardInterrupt``; a
    NaN or infinite loss raises :class:`capslib.faults.NonFiniteLossError` and is never saved.

    Returns:
        A dict with ``history`` (one dict per epoch), ``best_val_accuracy``, ``best_epoch``,
        ``out_dir`` and ``model`` (the trained model, last epoch's weights; with ``ema_decay``
        the averaged model, whose weights validated and went into ``best.pt``).
    """
    config = with_overrides(config, overrides)  # a copy: the caller's config is never changed
    world = world_from_env()  # torchrun's processes (capslib.distributed); one process: World()
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
        config = with_resumed_settings(config, checkpoint["config"])
    seed_everything(config.seed)
    model = build_model(model, config, checkpoint).to(device)
    data = load_data(train_set, val_set, config, getattr(model, "num_classes", None), device)
    run = start_run(model, config, checkpoint)
    if world.rank > 0:  # the saved sums are all processes' (rank 0 saved them); they count once
        run.partial_epoch = {}
    if checkpoint is not None and world.is_main:
        print(f"resuming {out_dir / 'last.pt'}: {_position(run, config, len(data.train_x))}", flush=True)
    if world.is_main:
        write_json_atomic(asdict(config), out_dir / "config.json")
    session = open_session(run, config, device, world)

    # SIGINT and SIGTERM stop the loop after the batch under way, checkpointed (capslib.faults).
    with StopSignals() as session.signals, closing(session):
        while run.epoch < config.epochs:
            epoch_start = time.monotonic()
            sums = train_one_epoch(run, data, config, session)
            if sums is None:  # stopped part-way (stop_after_batches, a signal): checkpointed
                break
            val_accuracy = accuracy(run.eval_model, data.val_x, data.val_y, config.eval_batch_size)
            record = epoch_record(run, sums, val_accuracy, len(data.val_x), time.monotonic() - epoch_start)
            end_epoch(run, record, config, session, data.val_x)
            if world.distributed:  # a signal may have reached some processes during validation
                session.agreed_stop = agree([session.stopped], world, device)[0]
            if session.stopped:
                break
    signum = session.signals.received
    if signum is None and session.agreed_stop and not session.stop_after_reached:
        signum = signal.SIGTERM  # under torchrun: another process was signalled, and this one stopped with it
    if signum is not None and run.epoch < config.epochs:
        where = f"stopped at {_position(run, config, len(data.train_x))}; saved {out_dir / 'last.pt'}"
        raise TrainingInterrupted(signum, where)
    return {
        "history": run.history,
        "best_val_accuracy": run.best_val_accuracy,
        "best_epoch": run.best_epoch,
        "out_dir": str(out_dir),
        "model": run.eval_model,
    }


# ----------------------------------------------------------------------------- fit's steps, in order


def with_overrides(config: TrainConfig | None, overrides: dict) -> TrainConfig:
    """A validated copy of ``config`` (default: ``TrainConfig()``) with ``overrides`` applied."""
    config = config or TrainConfig()
    names = [f.name for f in fields(TrainConfig)]
    for key in overrides:
        if key not in names:
            raise ValueError(f"unknown training setting {key!r}; TrainConfig has {sorted(names)}")
    config = replace(config, **overrides)
    config.validate()
    return config


def check_world(config: TrainConfig, world: World) -> None:
    """``ValueError`` for settings a run on several processes cannot honour."""
    if not world.distributed:
        return
    if config.batch_size % world.size:
        suggestion = config.batch_size // world.size * world.size or world.size
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of the world size {world.size}: every process "
            f"trains on an equal share of each batch (e.g. --batch-size {suggestion})"
        )
    if config.compile:
        raise ValueError("--compile is not supported under torchrun yet: drop --compile or run one process")


def set_up_device(config: TrainConfig, world: World | None = None) -> tuple[TrainConfig, torch.device]:
    """Set the CPU threads; pick the device (under torchrun: this process's GPU, or the CPU). The
    returned config records the threads used."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = device_for(world, config.device) if world is not None and world.distributed else get_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    return replace(config, threads=torch.get_num_threads()), device


# Settings that decide which images a run sees, in what order, and how it learns: a resumed run
# keeps its own, whatever the resuming call says, or it would not continue the same run.
# bf16 autocast (--amp) runs where torch autocasts convolutions to bf16; MPS is left in fp32.
AMP_DEVICES = ("cuda", "cpu")

RESUMED_SETTINGS = ("seed", "batch_size", "lr", "lr_decay", "max_shift", "val_size", "train_limit", "dataset")


def with_resumed_settings(config: TrainConfig, saved: dict) -> TrainConfig:
    """``config`` with the run-defining settings of the checkpoint's config ``saved``."""
    restored = {key: saved[key] for key in RESUMED_SETTINGS}
    restored["ema_decay"] = saved.get("ema_decay")  # absent from checkpoints older than EMA
    return replace(config, **restored)


def build_model(model: nn.Module | None, config: TrainConfig, checkpoint: dict | None) -> nn.Module:
    """``model``, or a CapsNet as the checkpoint or the config describes it; ``init_from`` loaded
    into it unless resuming (a checkpoint's own weights come later, in :func:`start_run`)."""
    if model is None:
        if checkpoint is not None and "model_config" in checkpoint:
            model = model_from_config(checkpoint["model_config"])
        elif config.model in BASELINES:
            if config.dataset == MULTIMNIST:
                raise ValueError(
                    f"--dataset {MULTIMNIST} trains a CapsNet (two digits need two long capsules); "
                    f"got --model {config.model}"
                )
            model = baseline_cnn(config.model)
        else:
            shape = (1, CANVAS, CANVAS) if config.dataset == MULTIMNIST else (1, 28, 28)
            model = CapsNet(
                image_shape=shape, routing_iterations=config.routing_iterations, reconstruction=config.reconstruction
            )
    if config.init_from and checkpoint is None:
        model.load_state_dict(initial_weights(config.init_from), strict=True)
    return model


class Data(NamedTuple):
    """The training and validation sets as tensors, on the training device."""

    train_x: torch.Tensor  # (N, C, H, W) float in [0, 1]
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor  # (N_val, C, H, W)
    val_y: torch.Tensor  # (N_val,)


def load_data(train_set, val_set, config: TrainConfig, num_classes: int | None, device: torch.device) -> Data:
    """Both sets as tensors (loading ``config.dataset`` when either is None), images and labels range-checked.

    For MultiMNIST the training tensors are the digits ``(N, 1, 28, 28)`` that pairs are made of
    (on the CPU, where :func:`capslib.multimnist.pairs_for` makes them), and the validation set is
    the fixed pairs ``(N_val, 1, 36, 36)`` made from the validation digits, labels ``(N_val, 2)``."""
    if train_set is None or val_set is None:
        source = "mnist" if config.dataset == MULTIMNIST else config.dataset
        train_set, val_set = split_train_val(load_dataset(source, train=True), config.val_size)
    train_x, train_y = to_tensors(train_set)  # (N, C, H, W), (N,)
    if config.train_limit:
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    val_x, val_y = to_tensors(val_set)  # (N_val, C, H, W), (N_val,)
    if config.dataset == MULTIMNIST:
        fixed = multimnist_test_set(val_x, val_y, seed=VALIDATION_SEED)  # the same pairs every epoch
        val_x, val_y = fixed.images, fixed.labels  # (N_val, 1, 36, 36), (N_val, 2)
    # Every image and label is checked once, here on the CPU, before any training: a bad one fails
    # now, not mid-epoch, and the steps need no check of their own (on a GPU, a synchronisation each).
    check_image_range(train_x, name="training set images")
    check_image_range(val_x, name="validation set images")
    if num_classes is not None:
        check_label_range(train_y, num_classes, name="training set labels")
        check_label_range(val_y, num_classes, name="validation set labels")
    data = Data(train_x, train_y, val_x, val_y)
    if device.type != "cpu":  # the whole dataset fits on any GPU: no loader in the hot loop
        on_device = [t.to(device) for t in data]
        if config.dataset == MULTIMNIST:  # pairs are made on the CPU from the digits
            on_device[:2] = train_x, train_y
        data = Data(*on_device)
    return data


def start_run(model: nn.Module, config: TrainConfig, checkpoint: dict | None) -> RunState:
    """Adam, exponential learning-rate decay and (with ``ema_decay``) a weight average for ``model``,
    at epoch 0 or where ``checkpoint`` left off."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ema = None
    if config.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    run = RunState(model, optimizer, scheduler, ema)
    if checkpoint is not None:
        restore(run, checkpoint)
    return run


@dataclass
class Session:
    """What this call of fit adds to the run: how a step runs, where it logs, when it saves and stops."""

    step: Callable[[torch.Tensor, torch.Tensor], dict]  # train_step(images, labels) with the run's settings
    device: torch.device  # where the steps run
    out_dir: Path  # where last.pt, best.pt and history.json go
    writer: object | None  # a TensorBoard SummaryWriter, or None
    save_every: float  # seconds between checkpoints within an epoch
    stop_after: int | None  # stop after this many batches of this call (stop_after_batches)
    batches: int = 0  # batches run in this call
    last_save: float = field(default_factory=time.monotonic)  # when last.pt was last written
    signals: StopSignals | None = None  # SIGINT/SIGTERM received while training
    world: World = field(default_factory=World)  # the processes of the run (torchrun), one by default
    agreed_stop: bool = False  # under torchrun: some process asked to stop, so all stop here

    @property
    def stop_after_reached(self) -> bool:
        return self.stop_after is not None and self.batches >= self.stop_after

    @property
    def stopped(self) -> bool:
        """stop_after_batches reached, or a signal asked to stop (under torchrun: on any process)."""
        signalled = self.signals is not None and self.signals.received is not None
        return self.agreed_stop or signalled or self.stop_after_reached

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_session(run: RunState, config: TrainConfig, device: torch.device, world: World | None = None) -> Session:
    """The training step as configured (compiled, micro-batched, autocast; under torchrun through
    ``DistributedDataParallel``) and, on rank 0, the TensorBoard writer."""
    world = world or World()
    if world.distributed:  # averages the gradients over the processes; shares run.model's parameters
        step_model = DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        step_model = compiled_or_eager(run.model, enabled=config.compile)  # shares run.model's parameters
    step = functools.partial(
        train_step,
        step_model,
        run.optimizer,
        reconstruction_weight=config.reconstruction_weight,
        micro_batch=config.micro_batch,
        amp=config.amp and device.type in AMP_DEVICES,
    )
    writer = None
    if config.tensorboard and world.is_main:
        from torch.utils.tensorboard import SummaryWriter  # slow to import: only when asked for

        writer = SummaryWriter(str(Path(config.out_dir) / "tb"))
    return Session(
        step=step,
        device=device,
        out_dir=Path(config.out_dir),
        writer=writer,
        save_every=config.checkpoint_minutes * 60,
        stop_after=config.stop_after_batches,
        world=world,
    )


# The progress bar's loss and accuracy refresh this often, and after an epoch's last batch: each
# refresh reads the sums back from the device (once a second costs a GPU nothing; every step would).
PROGRESS_SECONDS = 1.0


def train_one_epoch(run: RunState, data: Data, config: TrainConfig, session: Session) -> dict | None:
    """Train epoch ``run.epoch``: all of it, or its rest when resumed mid-epoch.

    Every ``checkpoint_minutes``, and when ``stop_after_batches`` or a signal stops it part-way,
    ``last.pt`` saves the run mid-epoch: the epoch's position, its generator and its sums so far.

    Returns:
        The epoch's sums (``loss``, ``margin``, ``reconstruction``, ``correct``, ``seen``; the
        losses summed over images), or None if it stopped part-way.

    Raises:
        NonFiniteLossError: for a NaN or infinite loss, before any checkpoint holds its weights.
    """
    world = session.world
    # Under torchrun every batch is cut into equal shares, so an epoch's last, incomplete batch is dropped.
    whole = (
        (len(data.train_x) // config.batch_size)
        if world.distributed
        else math.ceil(len(data.train_x) / config.batch_size)
    )
    epoch, num_batches = run.epoch, max(whole, 1)
    generator = _epoch_generator(config.seed, epoch)
    order = torch.randperm(len(data.train_x), generator=generator)  # (N,)
    first_batch = run.batch_index
    if first_batch > 0:  # resumed mid-epoch: the same order, and the generator where it stopped
        generator.set_state(run.generator_state)
    sums = EpochSums(run.partial_epoch if first_batch > 0 else {}, session.device)
    non_finite = functools.partial(non_finite_loss, epoch, config.epochs, num_batches, session.out_dir)
    run.model.train()

    def read() -> dict:  # the sums so far: read back when shown or saved, never every step
        totals, bad_step = sums.read()
        if bad_step is not None:
            raise non_finite(first_batch + bad_step, skipped=False)
        return totals

    bar = tqdm(
        range(first_batch, num_batches),
        initial=first_batch,
        total=num_batches,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=not (config.progress and world.is_main),
        leave=False,
    )
    shown_at = -math.inf
    for batch_index in bar:
        idx = order[batch_index * config.batch_size : (batch_index + 1) * config.batch_size]  # (B,)
        targets = None
        if config.dataset == MULTIMNIST:  # each digit of the batch first, with a drawn partner and shifts
            pairs = pairs_for(data.train_x, data.train_y, idx, generator)
            x, y = pairs.images, pairs.labels  # (B, 1, 36, 36), (B, 2)
            targets = torch.stack([pairs.first, pairs.second], dim=1).to(session.device)  # (B, 2, 1, 36, 36)
        else:
            x = data.train_x[idx.to(data.train_x.device)]  # (B, C, H, W)
            y = data.train_y[idx.to(data.train_y.device)]  # (B,)
            if config.max_shift:
                x = random_shift(x, config.max_shift, generator=generator)
        if world.distributed:  # every process made the same global batch; each trains on its share
            mine = share(len(y), world)
            x, y = x[mine], y[mine]
            targets = targets[mine] if targets is not None else None
        x, y = x.to(session.device, non_blocking=True), y.to(session.device, non_blocking=True)
        try:
            stats = session.step(x, y, targets=targets)
        except NonFiniteLossError:  # train_step's check on the CPU: the step was not taken
            raise non_finite(batch_index, skipped=True) from None
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        sums.add(stats, len(y))
        session.batches += 1

        last = batch_index + 1 == num_batches
        if config.progress and (last or time.monotonic() - shown_at >= PROGRESS_SECONDS):
            shown, shown_at = read(), time.monotonic()
            bar.set_postfix(loss=f"{shown['loss'] / shown['seen']:.4f}", acc=f"{shown['correct'] / shown['seen']:.4f}")
        if session.writer is not None and batch_index % 50 == 0:
            step = epoch * num_batches + batch_index
            session.writer.add_scalar("loss/total", stats["loss"].item(), step)
            session.writer.add_scalar(f"loss/{getattr(run.model, 'loss_name', 'margin')}", stats["margin"].item(), step)
            session.writer.add_scalar("loss/reconstruction", stats["reconstruction"].item(), step)
        due = time.monotonic() - session.last_save > session.save_every
        if world.distributed:  # one decision for all processes, or some would wait for the others forever
            session.agreed_stop, due = agree([session.stopped, due], world, session.device)
        if (due or session.stopped) and not last:
            run.batch_index, run.generator_state = batch_index + 1, generator.get_state()
            run.partial_epoch = sum_across(read(), world, session.device)
            if world.is_main:
                save_run(run, config, session.out_dir)
            session.last_save = time.monotonic()
            if session.stopped:
                bar.close()
                return None
    bar.close()
    return sum_across(read(), world, session.device)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Fraction correct over ALL of ``images`` ``(N, C, H, W)`` (eval mode, no augmentation); with
    ``(N, K)`` labels, both (all K) digits right (:func:`capslib.functional.correct_predictions`)."""
    correct = 0
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]  # (B, C, H, W), (B,)
            correct += correct_predictions(class_scores(model(x)), y).sum().item()
    return correct / len(images)


def epoch_record(run: RunState, sums: dict, val_accuracy: float, num_val: int, seconds: float) -> dict:
    """The history entry of epoch ``run.epoch`` from its training sums and validation accuracy."""
    return {
        "epoch": run.epoch + 1,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": sums["loss"] / sums["seen"],
        f"train_{getattr(run.model, 'loss_name', 'margin')}_loss": sums["margin"] / sums["seen"],
        "train_reconstruction_loss": sums["reconstruction"] / sums["seen"],
        "train_accuracy": sums["correct"] / sums["seen"],
        "train_examples": sums["seen"],  # images (MultiMNIST: pairs) trained on in this epoch
        "val_accuracy": val_accuracy,
        "val_errors": round((1 - val_accuracy) * num_val),
        "epoch_seconds": seconds,  # since this epoch (re)started: a resumed epoch counts only its rest
        "elapsed_seconds": run.elapsed_before + time.monotonic() - run.started,  # the whole run so far
    }


def end_epoch(run: RunState, record: dict, config: TrainConfig, session: Session, val_x: torch.Tensor) -> None:
    """Record the epoch, decay the learning rate, checkpoint (``best.pt`` too if validation
    improved), log to TensorBoard and print one line."""
    run.history.append(record)
    run.scheduler.step()
    improved = record["val_accuracy"] > run.best_val_accuracy
    if improved:
        run.best_val_accuracy, run.best_epoch = record["val_accuracy"], record["epoch"]
    run.epoch, run.batch_index, run.generator_state, run.partial_epoch = run.epoch + 1, 0, None, {}
    session.last_save = time.monotonic()
    if not session.world.is_main:  # rank 0 writes the files and the line
        return
    save_run(run, config, session.out_dir, best=improved)
    write_json_atomic(run.history, session.out_dir / "history.json")
    if session.writer is not None:
        _log_epoch(session.writer, run.eval_model, record, val_x)
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


def _position(run: RunState, config: TrainConfig, num_train: int) -> str:
    """Where ``run`` continues, for people: "epoch 2/50, 120 of its 430 batches done"."""
    num_batches = math.ceil(num_train / config.batch_size)
    return f"epoch {run.epoch + 1}/{config.epochs}, {run.batch_index} of its {num_batches} batches done"


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One generator per epoch, derived from the seed: data order and shifts are reproducible and
    # a resumed run replays the same epoch exactly.
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _log_epoch(writer, model: nn.Module, record: dict, val_x: torch.Tensor) -> None:
    """Per-epoch TensorBoard: accuracies, lr, inputs vs reconstructions, coupling histogram."""
    from torchvision.utils import make_grid

    epoch = record["epoch"]
    writer.add_scalar("accuracy/train", record["train_accuracy"], epoch)
    writer.add_scalar("accuracy/val", record["val_accuracy"], epoch)
    writer.add_scalar("lr", record["lr"], epoch)
    writer.add_scalar("loss/epoch_total", record["train_loss"], epoch)
    x = val_x[:16]  # (16, C, H, W)
    with eval_mode(model):
        out = model(x)
    if isinstance(out, torch.Tensor):  # a baseline CNN's logits: nothing to reconstruct or route
        writer.flush()
        return
    if out.reconstructions is not None:
        grid = make_grid(torch.cat([x, out.reconstructions.float()]).cpu(), nrow=16, pad_value=1.0)
        writer.add_image("inputs_vs_reconstructions", grid, epoch)
    if getattr(out, "coupling", None) is not None:
        writer.add_histogram("coupling_coefficients", out.coupling.float().cpu(), epoch)
    writer.flush()


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    main_process = world_from_env().is_main  # under torchrun, rank 0 speaks for all
    try:
        result = fit(config=config_from_args(args), resume=args.resume)
    except TrainingInterrupted as stop:  # SIGINT/SIGTERM: one line, not a traceback
        if main_process:
            print(f"{stop}; continue with: {resume_command(argv, args.out_dir)}", file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_status) from None
    if not main_process:
        return result
    print(
        f"best validation accuracy {result['best_val_accuracy']:.4f} at epoch {result['best_epoch']}; "
        f"checkpoints in {result['out_dir']} (best.pt, last.pt)"
    )
    return result


def resume_command(argv: list[str], out_dir: str) -> str:
    """The command that continues a run started with the options ``argv``: the same options (a
    resumed run takes its epochs, logging and devices from the command line), ``--out`` and ``--resume``."""
    options = [arg for arg in argv if arg != "--resume"]
    if "--out" not in options and not any(arg.startswith("--out=") for arg in options):
        options += ["--out", out_dir]
    return shlex.join(["python", "-m", "capslib.train", *options, "--resume"])


if __name__ == "__main__":
    main()
