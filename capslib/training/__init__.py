"""Training: ``fit`` and its step, the run's settings, checkpoints, faults, ``torchrun``."""

from .config import TrainConfig
from .loop import fit, total_loss, train_step

__all__ = ["TrainConfig", "fit", "total_loss", "train_step"]
