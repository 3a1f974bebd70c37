"""Data: MNIST and Fashion-MNIST from disk, the shift and affine transforms, MultiMNIST pairs."""

from .datasets import *  # noqa: F403  (mnist, load_dataset, to_tensors, ...: the datasets module's __all__)
from .datasets import __all__ as _datasets_all
from .shift import random_shift, shift_images

__all__ = [*_datasets_all, "random_shift", "shift_images"]
