"""What hangs on the training loop besides the step: the progress bar, TensorBoard, timed
checkpoints, stopping (a signal, ``stop_after_batches``) and, under ``torchrun``, one stop decision for all.

The loop calls each hook in list order: :meth:`Hook.start_epoch`, then :meth:`Hook.after_step`
once per batch with a :class:`StepReport` (whose ``save`` and ``stop`` the hooks may set: the loop
then writes a mid-epoch checkpoint, and stops), :meth:`Hook.end_epoch` with the epoch's record,
and :meth:`Hook.close` at the end. Nothing here reads a tensor back from the device every step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..utils import eval_mode
from .config import TrainConfig
from .distributed import World, agree
from .faults import StopSignals

__all__ = ["StepReport", "Hook", "ProgressBar", "TensorBoard", "TimedCheckpoints", "StopAgreement", "default_hooks"]

# The progress bar's loss and accuracy refresh this often, and after an epoch's last batch: each
# refresh reads the sums back from the device (once a second costs a GPU nothing; every step would).
PROGRESS_SECONDS = 1.0

# Under torchrun the processes agree on stopping and on mid-epoch checkpoints every this many
# steps: each agreement waits for the device, so a signal is honoured within this many steps.
AGREE_EVERY = 10


@dataclass
class StepReport:
    """One finished training step, as the hooks see it, and what they decide."""

    epoch: int  # 0-based
    batch_index: int  # 0-based, within the epoch
    num_batches: int  # batches per epoch
    stats: dict  # train_step's detached sums, on the device
    read: Callable[[], dict]  # the epoch's sums so far: one read-back from the device (raises on a non-finite loss)
    save: bool = False  # set by hooks: write a mid-epoch checkpoint after this step
    stop: bool = False  # set by hooks: stop after this step, checkpointed

    @property
    def last(self) -> bool:
        """The epoch's last batch (its end writes a checkpoint anyway)."""
        return self.batch_index + 1 == self.num_batches


class Hook:
    """Does nothing at every point the loop calls; hooks override what they need."""

    def start_epoch(self, epoch: int, first_batch: int, num_batches: int) -> None:
        pass

    def after_step(self, step: StepReport) -> None:
        pass

    def saved(self) -> None:
        """``last.pt`` was just written (mid-epoch or at an epoch's end)."""

    def end_epoch(self, record: dict, model: torch.nn.Module, val_x: torch.Tensor) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressBar(Hook):
    """A tqdm bar per epoch with the running loss and accuracy, refreshed about every ``PROGRESS_SECONDS``.

    Under torchrun rank 0 shows it, and every process reads its sums as often: each read is also
    where a process finds a non-finite loss (:mod:`capslib.training.faults`).
    """

    def __init__(self, epochs: int, enabled: bool, shown: bool = True):
        self.epochs, self.enabled, self.shown, self.bar, self.shown_at = epochs, enabled, shown, None, -math.inf

    def start_epoch(self, epoch: int, first_batch: int, num_batches: int) -> None:
        description = f"epoch {epoch + 1}/{self.epochs}"
        hidden = not (self.enabled and self.shown)
        self.bar = tqdm(total=num_batches, initial=first_batch, desc=description, disable=hidden, leave=False)

    def after_step(self, step: StepReport) -> None:
        self.bar.update(1)
        if self.enabled and (step.last or time.monotonic() - self.shown_at >= PROGRESS_SECONDS):
            shown, self.shown_at = step.read(), time.monotonic()
            self.bar.set_postfix(
                loss=f"{shown['loss'] / shown['seen']:.4f}", acc=f"{shown['correct'] / shown['seen']:.4f}"
            )

    def end_epoch(self, record: dict, model, val_x) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TensorBoard(Hook):
    """Losses every ``every`` batches; per epoch accuracies, lr, inputs vs reconstructions, coupling histogram."""

    def __init__(self, out_dir: Path, loss_name: str, every: int = 50):
        from torch.utils.tensorboard import SummaryWriter  # slow to import: only when asked for

        self.writer, self.loss_name, self.every = SummaryWriter(str(out_dir / "tb")), loss_name, every

    def after_step(self, step: StepReport) -> None:
        if step.batch_index % self.every == 0:  # .item() waits for the device: not every step
            at = step.epoch * step.num_batches + step.batch_index
            self.writer.add_scalar("loss/total", step.stats["loss"].item(), at)
            self.writer.add_scalar(f"loss/{self.loss_name}", step.stats["classification"].item(), at)
            self.writer.add_scalar("loss/reconstruction", step.stats["reconstruction"].item(), at)

    def end_epoch(self, record: dict, model: torch.nn.Module, val_x: torch.Tensor) -> None:
        from torchvision.utils import make_grid

        epoch = record["epoch"]
        self.writer.add_scalar("accuracy/train", record["train_accuracy"], epoch)
        self.writer.add_scalar("accuracy/val", record["val_accuracy"], epoch)
        self.writer.add_scalar("lr", record["lr"], epoch)
        self.writer.add_scalar("loss/epoch_total", record["train_loss"], epoch)
        x = val_x[:16]  # (16, C, H, W)
        with eval_mode(model), torch.no_grad():
            out = model(x)
        reconstructions = getattr(out, "reconstructions", None)  # a CNN's logits have none, nor coupling
        if reconstructions is not None and reconstructions.dim() == x.dim():
            grid = make_grid(torch.cat([x, reconstructions.float()]).cpu(), nrow=16, pad_value=1.0)
            self.writer.add_image("inputs_vs_reconstructions", grid, epoch)
        if getattr(out, "coupling", None) is not None:
            self.writer.add_histogram("coupling_coefficients", out.coupling.float().cpu(), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TimedCheckpoints(Hook):
    """Asks for a mid-epoch checkpoint once ``minutes`` have passed since ``last.pt`` was written."""

    def __init__(self, minutes: float):
        self.seconds, self.last_save = minutes * 60, time.monotonic()

    def after_step(self, step: StepReport) -> None:
        step.save = step.save or time.monotonic() - self.last_save > self.seconds

    def saved(self) -> None:
        self.last_save = time.monotonic()


class StopAgreement(Hook):
    """Stops after a signal (SIGINT, SIGTERM: :class:`capslib.training.faults.StopSignals`) or
    ``stop_after`` batches of this call; under torchrun, one decision for all processes.

    A signal reaches one process, so under torchrun the processes agree (one all-reduce) on
    stopping and on the checkpoint requests of the hooks before it, every :data:`AGREE_EVERY`
    steps, at ``stop_after`` and at each epoch's end; in between they neither stop nor save, so
    no process waits for one that left. Goes last in the hook list.
    """

    def __init__(self, signals: StopSignals, stop_after: int | None, world: World, device: torch.device):
        self.signals, self.stop_after, self.world, self.device = signals, stop_after, world, device
        self.batches = 0  # steps of this call
        self.agreed = False  # under torchrun: some process asked to stop, so all stop

    @property
    def stop_after_reached(self) -> bool:
        return self.stop_after is not None and self.batches >= self.stop_after

    @property
    def requested(self) -> bool:
        """This process was asked to stop: a signal, or stop_after reached."""
        return self.signals.received is not None or self.stop_after_reached

    def after_step(self, step: StepReport) -> None:
        self.batches += 1
        step.stop = self.requested
        if not self.world.distributed:
            return
        if self.batches % AGREE_EVERY == 0 or self.stop_after_reached:  # the same steps on every process
            self.agreed, step.save = agree([step.stop, step.save], self.world, self.device)
            step.stop = self.agreed
        else:
            step.stop = step.save = False

    def stop_at_epoch_end(self) -> bool:
        """Whether to stop after the epoch that just ended (under torchrun: agreed, since a signal may
        have reached some processes during validation)."""
        if self.world.distributed:
            self.agreed = agree([self.requested], self.world, self.device)[0]
            return self.agreed
        return self.requested


def default_hooks(config: TrainConfig, world: World, device: torch.device, loss_name: str, signals: StopSignals):
    """The progress bar, TensorBoard (rank 0, when asked for), timed checkpoints and the stop
    agreement, in that order."""
    hooks: list[Hook] = [ProgressBar(config.epochs, enabled=config.progress, shown=world.is_main)]
    if config.tensorboard and world.is_main:
        hooks.append(TensorBoard(Path(config.out_dir), loss_name))
    hooks += [
        TimedCheckpoints(config.checkpoint_minutes),
        StopAgreement(signals, config.stop_after_batches, world, device),
    ]
    return hooks
