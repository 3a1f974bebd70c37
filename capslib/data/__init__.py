"""Data: MNIST and Fashion-MNIST from disk, the shift and affine transforms, MultiMNIST pairs."""

from .datasets import *  # noqa: F403  (the datasets module's public names: mnist, load_dataset, ...)
from .datasets import __all__ as _datasets_all

__all__ = list(_datasets_all)
