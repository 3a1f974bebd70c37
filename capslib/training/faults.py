"""What stops a training run early, and how it stops without losing work or saving wrong weights.

**A non-finite loss** (NaN or infinite: NaN pixels, a learning rate that diverges) would turn every
weight into NaN at the next optimizer step. :func:`capslib.training.fit` raises
:class:`NonFiniteLossError` naming the epoch, the batch and the step, and no checkpoint ever holds
the weights that loss touched: ``last.pt`` and ``best.pt`` keep the last good state.

* On the CPU :func:`capslib.training.train_step` checks the loss before the optimizer step: reading a
  CPU tensor costs nothing, so the step is never taken and the weights in memory stay good too.
* On a GPU (or MPS) reading the loss every step would make the host wait for the device (a
  synchronisation per step, the thing the training loop avoids). There the step runs, and a flag
  on the device records the first non-finite loss, folded into the loss sums fit already keeps
  there. fit reads it where it reads those sums anyway (the progress bar's, about every second;
  every checkpoint; every epoch end), always BEFORE writing a checkpoint, and names the first bad
  step exactly. The weights in memory may by then be NaN; the files are not.

**SIGINT and SIGTERM** (Ctrl-C, Jupyter's interrupt, ``kill``, a batch scheduler) never stop a step
half-way: :class:`StopSignals` records the signal, the batch under way finishes, fit writes a
mid-epoch checkpoint exactly like its periodic ones (so the resumed run equals an uninterrupted
one) and raises :class:`TrainingInterrupted`, a ``KeyboardInterrupt``: a notebook shows an
interrupted cell, and ``python -m capslib.train`` prints one line with the command that resumes and
exits with 130 (SIGINT) or 143 (SIGTERM). A second signal stops at once, for a step that hangs:
without a new checkpoint, since it may land inside an optimizer step with half the weights
updated; the last checkpoint stays. For the same reason a ``KeyboardInterrupt`` that fit did not
turn into a request (fit running outside the main thread, where Python allows no signal handler)
passes through without a checkpoint.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "StopSignals", "non_finite_loss", "reads_are_free"]


class NonFiniteLossError(FloatingPointError):
    """The training loss was NaN or infinite; fit stopped before saving the weights it touched."""


class TrainingInterrupted(KeyboardInterrupt):
    """fit stopped on SIGINT or SIGTERM (``signum``), after a checkpoint unless its message says not."""

    def __init__(self, signum: int, what: str):
        super().__init__(f"{signal.Signals(signum).name}: {what}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def reads_are_free(tensor) -> bool:
    """Whether reading ``tensor``'s value costs nothing: on the CPU. Elsewhere it waits for the device."""
    return tensor.device.type == "cpu"


def non_finite_loss(epoch: int, epochs: int, num_batches: int, out_dir, batch_index: int, *, skipped: bool):
    """The :class:`NonFiniteLossError` for the loss of batch ``batch_index`` of ``epoch`` (both 0-based);
    ``skipped``: its optimizer step was not taken."""
    step = epoch * num_batches + batch_index  # the x-axis of the TensorBoard loss curves
    kept = (
        "the optimizer step was skipped, the weights are unchanged"
        if skipped
        else "training stopped before saving the weights it touched"
    )
    return NonFiniteLossError(
        f"non-finite loss (NaN or infinite) at epoch {epoch + 1}/{epochs}, batch {batch_index + 1} of "
        f"{num_batches} (TensorBoard step {step}): {kept}; {out_dir}/last.pt, if there is one, holds the last "
        "good state. Look for NaN or infinite values in the data, or lower the learning rate."
    )


class StopSignals:
    """``with StopSignals() as signals:`` turns SIGINT and SIGTERM into ``signals.received`` (the
    first signal's number, else None) for the block; a second signal raises at once.

    Python lets only the main thread set signal handlers: elsewhere this does nothing, and a
    Ctrl-C interrupts as it always does. The handlers in place before are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum  # fit stops at the end of the batch under way, after a checkpoint
            return
        self._restore()
        raise TrainingInterrupted(signum, "a second signal: stopped at once, without a new checkpoint")
