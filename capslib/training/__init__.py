"""Training: ``fit`` and its step, the batches, the hooks, the run's settings, checkpoints, faults, ``torchrun``."""

from .config import TrainConfig
from .loop import fit
from .step import total_loss, train_step

__all__ = ["TrainConfig", "fit", "total_loss", "train_step"]
