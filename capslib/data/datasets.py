"""MNIST and Fashion-MNIST as torch datasets, found on disk, plus the paper's shift augmentation.

Where data is looked for:

* MNIST: the four gzip files bundled in the repository's ``data/mnist/`` (checked against the
  ``SHA256SUMS`` beside them), or ``$CAPSNET_DATA/mnist/`` when ``CAPSNET_DATA`` is set.
* Fashion-MNIST: ``$CAPSNET_DATA/fashion-mnist/``, the repository's ``data/fashion-mnist/``, then
  Debian's ``/usr/share/datasets/fashion-mnist/`` (package ``dataset-fashion-mnist``).

torchvision reads uncompressed IDX files from ``<root>/MNIST/raw/``; the gzips are unpacked once,
atomically, into ``<data dir>/cache/`` (git-ignored; ``~/.cache/capslib`` if that is read-only).
Pass ``root=`` to use your own torchvision root instead, with ``download=True`` if you are online.

The unpacked copy is checked on every load against what was recorded when it was unpacked
(:data:`UNPACKED_RECORD`, beside ``raw/``: size and SHA-256 of each file, and the SHA-256 of the
gzip it came from): a missing, truncated or altered file is unpacked again from the gzip, which is
first checked against ``SHA256SUMS``, with a warning naming what was wrong. Hashing all four files
is cheap: about 40 ms for MNIST's 55 MB on a 2-core machine, less than torchvision takes to read
them, so the full SHA-256 is checked every time, not only the size.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from ..utils import DATA_ENV, atomic_write, data_dir
from .affine import AFFNIST_RANGES, AffineParameters, AffineRanges, affine_transform, random_affine_parameters

__all__ = [
    "DATA_ENV",
    "DATASETS",
    "DataNotFoundError",
    "CorruptDataError",
    "UNPACKED_RECORD",
    "data_dir",
    "load_dataset",
    "mnist",
    "fashion_mnist",
    "random_shift",
    "shift_images",
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
UNPACKED_RECORD = "unpacked.json"
"""File beside each cache's ``raw/`` folder recording the size and SHA-256 of every file unpacked there."""
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


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are not where capslib looked."""


class CorruptDataError(ValueError):
    """A dataset file does not match its recorded checksum."""


def _cache_dir() -> Path:
    cache = data_dir() / "cache"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=cache, delete=True)
        probe.close()
        return cache
    except OSError:
        fallback = Path.home() / ".cache" / "capslib"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _verify_checksums(source: Path) -> None:
    for name, expected in _listed_sums(source).items():
        actual = _sha256(source / name)
        if actual != expected:
            raise CorruptDataError(
                f"{source / name} is corrupt: its SHA-256 is {actual}, SHA256SUMS expects {expected}. "
                "Restore it (git checkout -- data/ in the repository) or point CAPSNET_DATA at a good copy."
            )


def _read_record(path: Path) -> dict[str, dict]:
    """The ``files`` entries of an :data:`UNPACKED_RECORD`; empty if it is missing or unreadable."""
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return files if isinstance(files, dict) else {}


def _cache_fault(path: Path, entry: dict | None, source_sum: str | None) -> tuple[bool, str] | None:
    """Why ``path`` must be unpacked again, as ``(corrupt, reason)``, or None if it matches ``entry``."""
    if not path.exists():
        return False, "missing"
    if not isinstance(entry, dict):
        return False, "unpacked by an older capslib, without a record"
    if source_sum is not None and entry.get("source_sha256") != source_sum:
        return False, "unpacked from another version of the gzip"
    size = path.stat().st_size
    if size != entry.get("size"):
        return True, f"it has {size} bytes, expected {entry.get('size')}"
    digest = _sha256(path)
    if digest != entry.get("sha256"):
        return True, f"its SHA-256 is {digest}, not the {entry.get('sha256')} recorded when it was unpacked"
    return None


def _unpack(source: Path, raw_dir: Path) -> None:
    """Make ``raw_dir/<name>`` an exact copy of ``source/<name>.gz`` unpacked, for every IDX file.

    Each file is checked against :data:`UNPACKED_RECORD` (size, then SHA-256); one that is missing,
    unrecorded or differs is unpacked again from its gzip, verified first against ``SHA256SUMS``,
    written then renamed; the record is rewritten the same way. A file that was recorded and has
    changed since (truncated, bit-flipped) gets a warning: the disk or something on it damaged it.

    Raises:
        CorruptDataError: when the gzip itself does not match ``SHA256SUMS``.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    record_path = raw_dir.parent / UNPACKED_RECORD
    files = _read_record(record_path)
    listed = _listed_sums(source)
    faults = {}
    for name in IDX_FILES:
        fault = _cache_fault(raw_dir / name, files.get(name), listed.get(f"{name}.gz"))
        if fault is not None:
            faults[name] = fault
    if not faults:
        return
    for name, (corrupt, reason) in faults.items():
        if corrupt:
            warnings.warn(
                f"the cached copy {raw_dir / name} is corrupt ({reason}); it is unpacked again from "
                f"{source / name}.gz. If this recurs, check the disk holding {raw_dir}",
                UserWarning,
                stacklevel=3,
            )
    _verify_checksums(source)
    for name in faults:

        def gunzip(tmp: str, name: str = name) -> None:
            with open(tmp, "wb") as out, gzip.open(source / f"{name}.gz", "rb") as src:
                shutil.copyfileobj(src, out)

        path = atomic_write(raw_dir / name, gunzip, suffix=".part")
        files[name] = {
            "size": path.stat().st_size,
            "sha256": _sha256(path),
            "source_sha256": listed.get(f"{name}.gz"),
        }

    def write_record(tmp: str) -> None:
        Path(tmp).write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")

    atomic_write(record_path, write_record)


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


def _default_transform():
    from torchvision import transforms

    return transforms.ToTensor()  # uint8 (H, W) -> float (1, H, W) in [0, 1]


def mnist(train: bool = True, root: str | Path | None = None, download: bool = False, transform=None) -> Dataset:
    """MNIST as a ``torchvision.datasets.MNIST`` (60,000 train / 10,000 test images).

    Args:
        train: the training set (True) or the test set.
        root: a torchvision root holding ``MNIST/raw/``; None uses the bundled copy.
        download: let torchvision download into ``root`` (needs internet; only with ``root``).
        transform: applied to each PIL image; default ``ToTensor()`` -> ``(1, 28, 28)`` in [0, 1].
            No augmentation here: the training loop shifts training batches itself.

    Raises:
        DataNotFoundError, CorruptDataError: with where it looked and what to do.
    """
    from torchvision import datasets

    transform = transform if transform is not None else _default_transform()
    cached = root is None
    if cached:
        source = _find_source([data_dir() / "mnist"], "MNIST")
        root = _cache_dir()
        _unpack(source, Path(root) / "MNIST" / "raw")
    try:
        return datasets.MNIST(str(root), train=train, download=download, transform=transform)
    except RuntimeError as err:
        raise _unreadable("MNIST", Path(root) / "MNIST" / "raw", cached, err) from err


def fashion_mnist(
    train: bool = True, root: str | Path | None = None, download: bool = False, transform=None
) -> Dataset:
    """Fashion-MNIST as a ``torchvision.datasets.FashionMNIST``; same arguments as :func:`mnist`."""
    from torchvision import datasets

    transform = transform if transform is not None else _default_transform()
    cached = root is None
    if cached:
        candidates = [data_dir() / "fashion-mnist", DEBIAN_FASHION_MNIST]
        source = _find_source(candidates, "Fashion-MNIST (Debian package dataset-fashion-mnist)")
        root = _cache_dir()
        _unpack(source, Path(root) / "FashionMNIST" / "raw")
    try:
        return datasets.FashionMNIST(str(root), train=train, download=download, transform=transform)
    except RuntimeError as err:
        raise _unreadable("Fashion-MNIST", Path(root) / "FashionMNIST" / "raw", cached, err) from err


def _unreadable(what: str, raw: Path, cached: bool, err: Exception) -> DataNotFoundError:
    """torchvision could not read ``raw``: what to do depends on who filled it."""
    if cached:  # capslib unpacked and verified it just now, so something changed it since
        return DataNotFoundError(f"the unpacked {what} in {raw} could not be read ({err}); delete {raw} and retry")
    return DataNotFoundError(f"{what} not found under {raw} ({err}); pass download=True if online")


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

    Fast for torchvision's MNIST family (and ``Subset`` s of them) with the default ``ToTensor``
    transform, which keep every image in a uint8 tensor ``.data``; any other dataset, or one with
    another transform, is read item by item (so its transform is applied).
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


def shift_images(images: torch.Tensor, shifts: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image by its own whole number of pixels, zero filled, nothing wrapping round.

    Args:
        images: ``(B, C, H, W)`` on any device.
        shifts: ``(B, 2)`` integer ``(dy, dx)`` per image (down, right), each in ``[-max_shift, max_shift]``.
        max_shift: the largest ``|shift|`` allowed (the padding used).

    Returns:
        ``(B, C, H, W)`` shifted copy.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    if tuple(shifts.shape) != (batch, 2) or shifts.is_floating_point():
        raise ValueError(
            f"shifts must be integer (B, 2) = ({batch}, 2) (dy, dx) per image, got {tuple(shifts.shape)} {shifts.dtype}"
        )
    if max_shift < 0 or (batch and int(shifts.abs().max()) > max_shift):
        raise ValueError(
            f"every shift must lie in [-{max_shift}, {max_shift}] pixels, got up to {int(shifts.abs().max())}"
        )
    shifts = shifts.to(images.device).T  # (2, B): dy, dx
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)  # (B, C, H + 2m, W + 2m)
    rows = torch.arange(height, device=images.device) + max_shift - shifts[0].unsqueeze(1)  # (B, H)
    cols = torch.arange(width, device=images.device) + max_shift - shifts[1].unsqueeze(1)  # (B, W)
    batch_index = torch.arange(batch, device=images.device).view(batch, 1, 1)  # (B, 1, 1)
    # Advanced indexing puts the broadcast (B, H, W) axes first, then the sliced C axis.
    out = padded[batch_index, :, rows.unsqueeze(2), cols.unsqueeze(1)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def random_shift(images: torch.Tensor, max_shift: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's augmentation: shift each image by up to ``max_shift`` pixels, zero padded.

    Every image gets its own integer shift ``(dy, dx)`` drawn uniformly from
    ``[-max_shift, max_shift]``. For TRAINING batches only; test images are never shifted.

    Args:
        images: ``(B, C, H, W)`` on any device.
        max_shift: largest shift in pixels (2).
        generator: optional CPU ``torch.Generator`` for reproducible shifts.

    Returns:
        ``(B, C, H, W)`` shifted copy.
    """
    if images.dim() != 4:
        raise ValueError(f"random_shift expects (B, C, H, W), got {tuple(images.shape)}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return images.clone()
    shifts = torch.randint(-max_shift, max_shift + 1, (2, images.shape[0]), generator=generator)  # (2, B)
    return shift_images(images, shifts.T, max_shift)


AFFINE_SEED = 0
"""The seed of the fixed affine test set: every machine draws the same transformations."""


def affine_mnist(
    ranges: AffineRanges = AFFNIST_RANGES, seed: int = AFFINE_SEED, root: str | Path | None = None
) -> tuple[torch.utils.data.TensorDataset, AffineParameters]:
    """An affNIST-style test set: each of the 10,000 MNIST test digits under its own random affine
    transformation, drawn within ``ranges`` from a CPU generator seeded with ``seed``.

    Fixed and seeded (the same transformations on every machine), made on the fly in about a
    second; see :mod:`capslib.affine` for the ranges, their source and the conventions.

    Returns:
        ``(dataset, parameters)``: a ``TensorDataset`` of ``(image (1, 28, 28), label)`` and the
        :class:`capslib.affine.AffineParameters` applied to each image, in test-set order.
    """
    images, labels = to_tensors(mnist(train=False, root=root))  # (10000, 1, 28, 28), (10000,)
    params = random_affine_parameters(len(images), ranges, torch.Generator().manual_seed(seed))
    transformed = affine_transform(images, params)  # (10000, 1, 28, 28)
    return torch.utils.data.TensorDataset(transformed, labels), params
