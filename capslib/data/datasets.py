"""MNIST and Fashion-MNIST as torch datasets, read straight from their IDX gzip files.

Where data is looked for:

* MNIST: the four gzip files bundled in the repository's ``data/mnist/`` (checked against the
  ``SHA256SUMS`` beside them), or ``$CAPSNET_DATA/mnist/`` when ``CAPSNET_DATA`` is set.
* Fashion-MNIST: ``$CAPSNET_DATA/fashion-mnist/``, the repository's ``data/fashion-mnist/``, then
  Debian's ``/usr/share/datasets/fashion-mnist/`` (package ``dataset-fashion-mnist``).

Each load reads the split's two gzips into memory, checks them against ``SHA256SUMS`` where the
folder has one (Debian's copy has none: its package manager checks it), and unpacks them into
one uint8 tensor of images and one of labels. Nothing is written to disk, so a read-only data
folder works and there is no unpacked copy to go stale. Pass ``root=`` to use your own
torchvision root instead, with ``download=True`` if you are online (torchvision is imported only then).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from ..utils import DATA_ENV, data_dir
from .affine import AFFNIST_RANGES, AffineParameters, AffineRanges, affine_transform, random_affine_parameters

__all__ = [
    "DATA_ENV",
    "DATASETS",
    "DataNotFoundError",
    "CorruptDataError",
    "IDXDataset",
    "FASHION_MNIST_CLASSES",
    "data_dir",
    "load_dataset",
    "mnist",
    "fashion_mnist",
    "affine_mnist",
    "AFFINE_SEED",
    "split_train_val",
    "to_tensors",
]

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_UBYTE = 0x08
"""The IDX type code of unsigned bytes, the only one MNIST's files use."""


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are not where capslib looked."""


class CorruptDataError(ValueError):
    """A dataset file does not match its recorded checksum, or is not a readable IDX gzip."""


class IDXDataset(Dataset):
    """Images and labels held whole in memory; items are ``(image (1, H, W) float in [0, 1], label int)``.

    Attributes:
        data: ``(N, H, W)`` uint8 pixels, as in the IDX file.
        targets: ``(N,)`` int64 labels.
        transform: applied to each item's float image ``(1, H, W)``; None keeps it as it is.
        classes: the class names, ``classes[label]``.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        transform: Callable | None = None,
        classes: tuple[str, ...] = (),
    ):
        if data.dtype != torch.uint8 or data.dim() != 3 or targets.shape != (len(data),):
            raise ValueError(
                f"expected uint8 images (N, H, W) and labels (N,), got {data.dtype} {tuple(data.shape)} "
                f"and {tuple(targets.shape)}"
            )
        self.data, self.targets = data, targets.long()
        self.transform, self.classes = transform, tuple(classes)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.data[index].unsqueeze(0).float().div_(255.0)  # (1, H, W)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def _listed_sums(source: Path) -> dict[str, str]:
    """``{file name: SHA-256}`` from ``source/SHA256SUMS``; empty when there is none (Debian's copy)."""
    sums_file = source / "SHA256SUMS"
    if not sums_file.exists():
        return {}
    sums = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            expected, name = line.split()
            sums[name.lstrip("*")] = expected
    return sums


def _read_idx(path: Path, sha256: str | None, ndim: int) -> torch.Tensor:
    """The uint8 array of the IDX gzip at ``path``, ``ndim`` axes (3: images, 1: labels).

    Raises:
        CorruptDataError: when the file does not match ``sha256``, is not a gzip, or its IDX
            header does not describe its contents.
    """
    packed = path.read_bytes()
    if sha256 is not None and (actual := hashlib.sha256(packed).hexdigest()) != sha256:
        raise CorruptDataError(
            f"{path} is corrupt: its SHA-256 is {actual}, SHA256SUMS expects {sha256}. "
            "Restore it (git checkout -- data/ in the repository) or point CAPSNET_DATA at a good copy."
        )
    try:
        raw = gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDataError(f"{path} is not a readable gzip ({err}); replace it with a good copy") from None
    header = 4 + 4 * ndim
    # IDX: two zero bytes, the type code, the number of axes, then each axis' size as a big-endian int32.
    shape = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    size = header + (torch.Size(shape).numel() if len(raw) >= header else 0)
    if raw[:4] != bytes([0, 0, IDX_UBYTE, ndim]) or len(raw) != size:
        raise CorruptDataError(
            f"{path} is not an IDX file of {ndim}-axis unsigned bytes: header {raw[:4].hex()} {shape}, "
            f"{len(raw)} bytes unpacked (expected 0000080{ndim} and {size} bytes); replace it with a good copy"
        )
    # bytearray: a writable buffer for the tensor to own (bytes are read-only); one copy.
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(shape)


def _read_split(source: Path, train: bool, classes: tuple[str, ...], transform) -> IDXDataset:
    prefix = "train" if train else "t10k"
    sums = _listed_sums(source)
    images, labels = (
        _read_idx(source / f"{name}.gz", sums.get(f"{name}.gz"), ndim)
        for name, ndim in ((f"{prefix}-images-idx3-ubyte", 3), (f"{prefix}-labels-idx1-ubyte", 1))
    )
    if len(images) != len(labels):
        raise CorruptDataError(f"{source} holds {len(images)} {prefix} images but {len(labels)} labels")
    return IDXDataset(images, labels, transform=transform, classes=classes)


def _find_source(candidates: list[Path], what: str) -> Path:
    for folder in candidates:
        if all((folder / f"{name}.gz").exists() for name in IDX_FILES):
            return folder
    looked = "\n  ".join(str(c) for c in candidates)
    names = ", ".join(n + ".gz" for n in IDX_FILES)
    raise DataNotFoundError(
        f"{what} not found. capslib looked for the four IDX gzip files ({names}) in:\n"
        f"  {looked}\n"
        f"Put them in one of those folders, set {DATA_ENV} to a folder holding them in a sub-folder, or call "
        "with root=<torchvision root> and download=True on a machine with internet access."
    )


def _torchvision(kind: str, root: str | Path, train: bool, download: bool, transform) -> Dataset:
    """torchvision's ``MNIST``/``FashionMNIST`` under a user's own ``root`` (PIL images, so ``ToTensor`` by default)."""
    from torchvision import datasets, transforms

    transform = transform if transform is not None else transforms.ToTensor()  # (1, H, W) in [0, 1]
    try:
        return getattr(datasets, kind)(str(root), train=train, download=download, transform=transform)
    except RuntimeError as err:
        raw = Path(root) / kind / "raw"
        raise DataNotFoundError(f"{kind} not found under {raw} ({err}); pass download=True if online") from err


def mnist(train: bool = True, root: str | Path | None = None, download: bool = False, transform=None) -> Dataset:
    """MNIST (60,000 train / 10,000 test images) as an :class:`IDXDataset`.

    Args:
        train: the training set (True) or the test set.
        root: a torchvision root holding ``MNIST/raw/``; None reads the bundled copy.
        download: let torchvision download into ``root`` (needs internet; only with ``root``).
        transform: applied to each item's image, a float ``(1, 28, 28)`` in [0, 1] (with ``root``:
            torchvision's PIL image, default ``ToTensor()``). No augmentation by default: the
            training loop shifts training batches itself.

    Raises:
        DataNotFoundError, CorruptDataError: with where it looked and what to do.
    """
    if root is not None:
        return _torchvision("MNIST", root, train, download, transform)
    source = _find_source([data_dir() / "mnist"], "MNIST")
    return _read_split(source, train, tuple(str(k) for k in range(10)), transform)


def fashion_mnist(
    train: bool = True, root: str | Path | None = None, download: bool = False, transform=None
) -> Dataset:
    """Fashion-MNIST as an :class:`IDXDataset`; same arguments as :func:`mnist`."""
    if root is not None:
        return _torchvision("FashionMNIST", root, train, download, transform)
    candidates = [data_dir() / "fashion-mnist", DEBIAN_FASHION_MNIST]
    source = _find_source(candidates, "Fashion-MNIST (Debian package dataset-fashion-mnist)")
    return _read_split(source, train, FASHION_MNIST_CLASSES, transform)


DATASETS = {"mnist": mnist, "fashion-mnist": fashion_mnist}


def load_dataset(name: str, train: bool = True, **kwargs) -> Dataset:
    """``mnist`` or ``fashion-mnist`` by name; ``kwargs`` go to :func:`mnist`/:func:`fashion_mnist`."""
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[key](train=train, **kwargs)


def split_train_val(dataset: Dataset, val_size: int = 5000) -> tuple[Subset, Subset]:
    """Fixed split: the last ``val_size`` examples validate, the rest train (55,000/5,000 for MNIST)."""
    n = len(dataset)
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and {n - 1} for a dataset of {n}, got {val_size}")
    return Subset(dataset, range(n - val_size)), Subset(dataset, range(n - val_size, n))


def to_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a dataset as ``(images (N, C, H, W) float in [0, 1], labels (N,) int64)``.

    Fast for an :class:`IDXDataset` without a transform, torchvision's MNIST family with the
    default ``ToTensor``, and ``Subset`` s of them: all keep every image in a uint8 tensor
    ``.data``. Any other dataset, or one with another transform, is read item by item (so its
    transform is applied).
    """
    indices = None
    base = dataset
    while isinstance(base, Subset):
        idx = torch.as_tensor(list(base.indices), dtype=torch.long)
        indices = idx if indices is None else idx[indices]
        base = base.dataset
    data, targets = getattr(base, "data", None), getattr(base, "targets", None)
    transform, target_transform = getattr(base, "transform", None), getattr(base, "target_transform", None)
    # The fast path reads pixels directly, so it is only right when the dataset's own transform is
    # the default ToTensor (or none); any other transform is honoured item by item below.
    plain = (transform is None or type(transform).__name__ == "ToTensor") and target_transform is None
    if (
        plain
        and isinstance(data, torch.Tensor)
        and data.dtype == torch.uint8
        and data.dim() == 3
        and targets is not None
    ):
        images = data if indices is None else data[indices]
        labels = torch.as_tensor(targets if indices is None else torch.as_tensor(targets)[indices])
        return images.unsqueeze(1).float().div_(255.0), labels.long()  # (N, 1, H, W), (N,)
    if len(dataset) == 0:
        raise ValueError("to_tensors got an empty dataset: there are no images to stack")
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([torch.as_tensor(img) for img, _ in items])
    labels = torch.as_tensor([int(lbl) for _, lbl in items], dtype=torch.long)
    return images.float(), labels


AFFINE_SEED = 0
"""The seed of the fixed affine test set: every machine draws the same transformations."""


def affine_mnist(
    ranges: AffineRanges = AFFNIST_RANGES, seed: int = AFFINE_SEED, root: str | Path | None = None
) -> tuple[torch.utils.data.TensorDataset, AffineParameters]:
    """An affNIST-style test set: each of the 10,000 MNIST test digits under its own random affine
    transformation, drawn within ``ranges`` from a CPU generator seeded with ``seed``.

    Fixed and seeded (the same transformations on every machine), made on the fly; see
    :mod:`capslib.data.affine` for the ranges, their source and the conventions.

    Returns:
        ``(dataset, parameters)``: a ``TensorDataset`` of ``(image (1, 28, 28), label)`` and the
        :class:`capslib.data.affine.AffineParameters` applied to each image, in test-set order.
    """
    images, labels = to_tensors(mnist(train=False, root=root))  # (10000, 1, 28, 28), (10000,)
    params = random_affine_parameters(len(images), ranges, torch.Generator().manual_seed(seed))
    transformed = affine_transform(images, params)  # (10000, 1, 28, 28)
    return torch.utils.data.TensorDataset(transformed, labels), params
