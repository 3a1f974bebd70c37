"""The settings of a training run: :class:`TrainConfig`, each field with its help text.

``python -m capslib.train`` (:mod:`capslib.training.cli`) has one option per field, named after it
(``batch_size``: ``--batch-size``), whose help is the field's ``metadata["help"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..baselines import MODEL_NAMES
from ..data.augment import AUGMENTATIONS
from ..routing_algorithms import ROUTING_ALGORITHMS

__all__ = ["TrainConfig", "MULTIMNIST", "RUN_SETTINGS"]

MULTIMNIST = "multimnist"
"""``--dataset multimnist``: pairs of overlapping MNIST digits made on the fly (:mod:`capslib.data.multimnist`)."""


def setting(default, help: str, *, defines_run: bool = False, factory=None):
    """A :class:`TrainConfig` field with its ``--help`` text. ``defines_run``: the setting changes the
    model, the loss, the data or the optimisation, so a resumed run keeps its checkpoint's value."""
    metadata = {"help": help, "defines_run": defines_run}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint and in ``<out>/config.json``.

    Each field's ``metadata["help"]`` is its help in ``python -m capslib.train --help``. Fields
    marked ``defines_run`` are the run's own: ``--resume`` keeps the checkpoint's values.
    """

    model: str = setting(
        "capsnet",
        "capsnet (the paper's, 8.2M), efficient-capsnet (Mazzia et al. 2021, 162k), or a baseline CNN: "
        "cnn-baseline (the paper's, 35.4M) or cnn-small (1.1M)",
        defines_run=True,
    )
    epochs: int = setting(50, "passes over the 55,000 training images")
    batch_size: int = setting(128, "images per training step (the paper's official code uses 128)", defines_run=True)
    lr: float = setting(1e-3, "Adam's learning rate at epoch 0", defines_run=True)
    lr_decay: float = setting(0.96, "multiply the learning rate by this after every epoch", defines_run=True)
    routing_iterations: int = setting(
        3, "routing iterations of the CapsNet fit() builds (when given no model)", defines_run=True
    )
    routing: str | None = setting(
        None,
        "routing algorithm of a capsule network: dynamic, uniform, self_attention or em "
        "(None: the model's own, dynamic for capsnet, self_attention for efficient-capsnet)",
        defines_run=True,
    )
    reconstruction: bool = setting(
        True, "the reconstruction decoder of the CapsNet fit() builds (when given no model)", defines_run=True
    )
    reconstruction_weight: float = setting(
        0.0005, "reconstruction loss weight (paper: small, not to dominate the margin loss)", defines_run=True
    )
    max_shift: int = setting(
        2, "shift augmentation of training images, in pixels (0 turns it off; multimnist: its own 4)", defines_run=True
    )
    augment: str = setting(
        "shift",
        "training augmentation: shift (the paper's: up to max_shift px) or efficient (Mazzia et al. 2021: a rotation "
        "of up to 30 degrees for half the images, the shift, a horizontal squish, a 4x4 erased patch); mnist data only",
        defines_run=True,
    )
    dataset: str = setting(
        "mnist", "mnist, fashion-mnist, or multimnist (pairs of overlapping digits, 36x36)", defines_run=True
    )
    val_size: int = setting(5000, "the last val_size training images validate", defines_run=True)
    train_limit: int | None = setting(
        None, "use only the first N training images (quick experiments; None: all)", defines_run=True
    )
    device: str = setting("auto", "auto: CUDA, then MPS, then CPU; or cuda, mps, cpu")
    seed: int = setting(0, "seeds model init, data order and augmentation", defines_run=True)
    # The config records the threads actually used, so a CPU run can be repeated bit for bit.
    threads: int | None = setting(
        None, "CPU threads (None: torch's default); fixed threads + seed = deterministic on CPU"
    )
    out_dir: str = setting("runs/capsnet", "checkpoints, config.json, history.json, TensorBoard logs (tb/)")
    checkpoint_minutes: float = setting(
        10.0, "also checkpoint within an epoch this often (last.pt ~100 MB: optimizer included)"
    )
    # On CPUs with native bf16 (AVX512-BF16, AMX) the 36x36 MultiMNIST step runs faster (docs/performance.md).
    amp: bool = setting(
        False, "bf16 autocast on CUDA and CPU (routing, squash and the losses stay fp32); ignored on MPS"
    )
    tensorboard: bool = setting(True, "write TensorBoard logs to <out>/tb")
    eval_batch_size: int = setting(500, "batch size for validation")
    progress: bool = setting(True, "tqdm progress bars (without them: one line per epoch)")
    init_from: str | None = setting(
        None, 'start from these weights: "pretrained", a checkpoint or a state dict', defines_run=True
    )
    stop_after_batches: int | None = setting(None, "stop (checkpointed, as if killed) after this many batches")
    # Polyak averaging: with ema_decay, validation, best.pt and the returned model use the AVERAGED weights.
    ema_decay: float | None = setting(
        None, "validate and ship a moving average of the weights, e.g. 0.999 per step", defines_run=True
    )
    compile: bool = setting(False, "opt-in torch.compile of the training step's model (eager if it cannot compile)")
    # Slices give the same update (gradients summed) in less memory: for batches that do not fit.
    micro_batch: int | None = setting(None, "forward/backward in slices of this many images (None: the whole batch)")
    extra: dict = setting(None, "free-form notes recorded with the run (no command-line option)", factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work."""
        checks = [
            (self.model in MODEL_NAMES, f"model must be one of {MODEL_NAMES}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.routing_iterations >= 1, "routing_iterations must be >= 1"),
            (self.routing is None or self.routing in ROUTING_ALGORITHMS, f"routing must be one of {ROUTING_NAMES}"),
            (self.reconstruction_weight >= 0, "reconstruction_weight must be >= 0"),
            (self.max_shift >= 0, "max_shift must be >= 0"),
            (self.augment in AUGMENTATIONS, f"augment must be one of {AUGMENTATIONS}"),
            (
                self.augment == "shift" or self.dataset != MULTIMNIST,
                "multimnist pairs take no augment but their shifts",
            ),
            (self.checkpoint_minutes > 0, "checkpoint_minutes must be > 0"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be None or in (0, 1)"),
            (self.micro_batch is None or self.micro_batch >= 1, "micro_batch must be None or >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {self}")


ROUTING_NAMES = tuple(ROUTING_ALGORITHMS)

RUN_SETTINGS = tuple(f.name for f in fields(TrainConfig) if f.metadata["defines_run"])
"""The settings a resumed run keeps from its checkpoint: all but epochs, logging, devices and how a step executes."""
