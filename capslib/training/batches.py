"""The data a run trains on, and the batches it makes of them: the only place that knows the dataset.

:func:`load_data` reads and checks the sets once; a :class:`BatchSource` then makes every epoch's
batches in the run's seeded order (MNIST digits shifted, or MultiMNIST pairs), keeps this
process's share under ``torchrun`` and moves it to the training device. The step and the hooks
take a :class:`Batch` and never ask what it was made of.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch

from ..data import load_dataset, split_train_val, to_tensors
from ..data.augment import augment
from ..data.multimnist import VALIDATION_SEED, multimnist_test_set, pairs_for
from ..functional import check_image_range, check_label_range
from .config import MULTIMNIST, TrainConfig
from .distributed import World, share

__all__ = ["Data", "load_data", "Batch", "BatchSource", "epoch_generator"]


class Data(NamedTuple):
    """The training and validation sets as tensors, on the training device."""

    train_x: torch.Tensor  # (N, C, H, W) float in [0, 1]
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor  # (N_val, C, H, W)
    val_y: torch.Tensor  # (N_val,)


def load_data(train_set, val_set, config: TrainConfig, num_classes: int | None, device: torch.device) -> Data:
    """Both sets as tensors (loading ``config.dataset`` when either is None), images and labels range-checked.

    For MultiMNIST the training tensors are the digits ``(N, 1, 28, 28)`` that pairs are made of
    (on the CPU, where :func:`capslib.data.multimnist.pairs_for` makes them), and the validation
    set is the fixed pairs ``(N_val, 1, 36, 36)`` made from the validation digits, labels ``(N_val, 2)``."""
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


class Batch(NamedTuple):
    """One training batch, this process's share of it, on the training device."""

    images: torch.Tensor  # (B, C, H, W) what the model sees
    labels: torch.Tensor  # (B,), or (B, K) for K digits per image
    targets: torch.Tensor | None  # (B, K, C, H, W) what the decoder redraws, each digit alone; None: the images


def shifted_digits(
    images, labels, idx: torch.Tensor, generator: torch.Generator, max_shift: int, how: str = "shift"
) -> Batch:
    """``images[idx]`` augmented by ``how`` (:mod:`capslib.data.augment`; ``"shift"``: by up to ``max_shift``
    pixels, Section 4's augmentation), their labels."""
    x = images[idx.to(images.device)]  # (B, C, H, W)
    y = labels[idx.to(labels.device)]  # (B,)
    if max_shift or how != "shift":
        x = augment(x, how, max_shift, generator=generator)
    return Batch(x, y, None)


def digit_pairs(
    images, labels, idx: torch.Tensor, generator: torch.Generator, max_shift: int, how: str = "shift"
) -> Batch:
    """Each digit of ``idx`` first in a MultiMNIST pair, with a drawn partner and shifts (their own 4 px)."""
    pairs = pairs_for(images, labels, idx, generator)
    targets = torch.stack([pairs.first, pairs.second], dim=1)  # (B, 2, 1, 36, 36)
    return Batch(pairs.images, pairs.labels, targets)  # (B, 1, 36, 36), (B, 2)


class BatchSource:
    """The batches of every epoch: a seeded order and augmentation (the same on every process, and
    again on resume), this process's share, on ``device``.

    Under ``torchrun`` every global batch is cut into equal shares, so an epoch's last, incomplete
    batch is dropped; on one process it is kept.
    """

    def __init__(self, data: Data, config: TrainConfig, world: World, device: torch.device):
        self.images, self.labels = data.train_x, data.train_y
        self.make = digit_pairs if config.dataset == MULTIMNIST else shifted_digits
        self.batch_size, self.max_shift, self.seed = config.batch_size, config.max_shift, config.seed
        self.augment = config.augment
        self.world, self.device = world, device
        count = len(self.images)
        whole = count // self.batch_size if world.distributed else math.ceil(count / self.batch_size)
        self.num_batches = max(whole, 1)  # batches per epoch
        self.generator: torch.Generator | None = None  # the epoch's, where its batches are so far

    def epoch(self, epoch: int, first_batch: int = 0, generator_state=None) -> Iterator[tuple[int, Batch]]:
        """``(batch_index, batch)`` of epoch ``epoch`` from ``first_batch`` on; resumed mid-epoch,
        ``generator_state`` is the checkpoint's, so the rest replays exactly."""
        self.generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(len(self.images), generator=self.generator)  # (N,)
        if first_batch > 0:  # the same order, and the generator where it stopped
            self.generator.set_state(generator_state)
        for batch_index in range(first_batch, self.num_batches):
            idx = order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]  # (B,)
            yield (
                batch_index,
                self.to_device(self.make(self.images, self.labels, idx, self.generator, self.max_shift, self.augment)),
            )

    def to_device(self, batch: Batch) -> Batch:
        """This process's share of the global ``batch`` (every process made the same one), on the device."""
        if self.world.distributed:
            mine = share(len(batch.labels), self.world)
            batch = Batch(*(t[mine] if t is not None else None for t in batch))
        return Batch(*(t.to(self.device, non_blocking=True) if t is not None else None for t in batch))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``: one per epoch, derived from the seed, so data order and shifts
    are reproducible and a resumed run replays the same epoch exactly."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)
