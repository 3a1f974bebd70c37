"""MNIST / Fashion-MNIST read from the bundled gzips, checksums and damaged files, shift augmentation, splits.

A test that damages data does it to a temporary copy that ``CAPSNET_DATA`` points at.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from capslib.data import datasets as data
from capslib.data.shift import random_shift

REPO = Path(__file__).resolve().parents[1]
BUNDLED_MNIST = REPO / "data" / "mnist"
GZ_FILES = [f"{name}.gz" for name in data.IDX_FILES]

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def copy_bundled_mnist(root: Path) -> Path:
    """A private data directory ``root`` holding ``mnist/`` (the four gzips and SHA256SUMS)."""
    shutil.copytree(BUNDLED_MNIST, root / "mnist")
    return root


def read_idx_images(path: Path) -> np.ndarray:
    """Parse an IDX3 gzip by hand: magic 2051, count, rows, cols (big-endian int32), then uint8 pixels."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    assert magic == 2051
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count = np.frombuffer(raw[:8], dtype=">i4")
    assert magic == 2049
    return np.frombuffer(raw[8:], dtype=np.uint8)[:count]


@pytest.fixture(scope="module")
def mnist_train():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(data.DATA_ENV, raising=False)
        return data.mnist(train=True)


@pytest.fixture(scope="module")
def mnist_test():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(data.DATA_ENV, raising=False)
        return data.mnist(train=False)


@pytest.fixture(scope="module")
def raw_test_images() -> np.ndarray:
    return read_idx_images(BUNDLED_MNIST / "t10k-images-idx3-ubyte.gz")


# --- where the data is ----------------------------------------------------------------------------


def test_data_dir_defaults_to_repository_and_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.data_dir() == REPO / "data"
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.data_dir() == tmp_path


def test_bundled_checksums_match():
    sums = {}
    for line in (BUNDLED_MNIST / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    assert sorted(sums) == sorted(GZ_FILES)
    for name, digest in sums.items():
        assert hashlib.sha256((BUNDLED_MNIST / name).read_bytes()).hexdigest() == digest, name


# --- MNIST ----------------------------------------------------------------------------------------


def test_mnist_sizes_and_label_counts(mnist_train, mnist_test):
    assert len(mnist_train) == 60_000
    assert len(mnist_test) == 10_000
    assert torch.as_tensor(mnist_train.targets).bincount(minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.as_tensor(mnist_test.targets).bincount(minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_labels_match_raw_files(mnist_test):
    raw = read_idx_labels(BUNDLED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert torch.equal(torch.as_tensor(mnist_test.targets).long(), torch.from_numpy(raw.astype(np.int64)))


def test_mnist_items_are_raw_pixels_without_augmentation(mnist_test, mnist_train, raw_test_images):
    for index in (0, 1, 4321, 9999):
        image, label = mnist_test[index]
        again, label_again = mnist_test[index]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32
        assert torch.equal(image, again) and label == label_again
        expected = torch.from_numpy(raw_test_images[index].astype(np.float32)) / 255.0
        assert torch.equal(image[0], expected)
    for index in (0, 59_999):
        assert torch.equal(mnist_train[index][0], mnist_train[index][0])


def test_corrupt_copy_raises(tmp_path, monkeypatch):
    root = copy_bundled_mnist(tmp_path)
    victim = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(victim.read_bytes())
    content[len(content) // 2] ^= 0x01  # one bit of one byte
    victim.write_bytes(bytes(content))
    monkeypatch.setenv(data.DATA_ENV, str(root))
    with pytest.raises(data.CorruptDataError, match="t10k-labels-idx1-ubyte.gz.*SHA256SUMS expects"):
        data.mnist(train=False)
    assert len(data.mnist(train=True)) == 60_000  # the other split's files are fine


def test_missing_folder_raises_naming_it(tmp_path, monkeypatch):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(empty))
    with pytest.raises(data.DataNotFoundError) as info:
        data.mnist(train=False)
    assert str(empty / "mnist") in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def _unlisted_copy(tmp_path, monkeypatch) -> Path:
    """A private MNIST folder without SHA256SUMS (as Debian ships its datasets): only reading can tell."""
    root = copy_bundled_mnist(tmp_path)
    (root / "mnist" / "SHA256SUMS").unlink()
    monkeypatch.setenv(data.DATA_ENV, str(root))
    return root / "mnist"


def test_a_truncated_gzip_without_checksums_raises_naming_it(tmp_path, monkeypatch):
    victim = _unlisted_copy(tmp_path, monkeypatch) / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-1000])
    with pytest.raises(data.CorruptDataError, match=r"t10k-images-idx3-ubyte.gz is not a readable gzip"):
        data.mnist(train=False)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda raw: raw[:-784], r"7839232 bytes unpacked \(expected 0000080\d and 7840016 bytes\)"),
        (lambda raw: b"\x00\x00\x0d\x03" + raw[4:], r"header 00000d03"),
        (lambda raw: raw[:16], r"header 00000803 \[10000, 28, 28\], 16 bytes"),
    ],
    ids=["an image short", "float type code", "header only"],
)
def test_a_gzip_that_is_not_the_idx_it_claims_raises_naming_it(tmp_path, monkeypatch, change, expected):
    victim = _unlisted_copy(tmp_path, monkeypatch) / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(gzip.compress(change(gzip.decompress(victim.read_bytes())), compresslevel=1))
    with pytest.raises(data.CorruptDataError, match=rf"t10k-images-idx3-ubyte.gz is not an IDX file.*{expected}"):
        data.mnist(train=False)


def test_images_and_labels_of_different_counts_are_refused(tmp_path, monkeypatch):
    folder = _unlisted_copy(tmp_path, monkeypatch)
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    labels = gzip.decompress(victim.read_bytes())
    victim.write_bytes(gzip.compress(labels[:4] + (9_999).to_bytes(4, "big") + labels[8:-1], compresslevel=1))
    with pytest.raises(data.CorruptDataError, match="10000 t10k images but 9999 labels"):
        data.mnist(train=False)


def test_reading_writes_nothing_so_a_read_only_folder_works(tmp_path, monkeypatch, raw_test_images):
    """The gzips are read into memory: no unpacked copy is written next to them or anywhere else."""
    root = copy_bundled_mnist(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    monkeypatch.setenv(data.DATA_ENV, str(root))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        images, _ = data.to_tensors(data.mnist(train=False))
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert torch.equal(images[:, 0], torch.from_numpy(raw_test_images.astype(np.float32)) / 255.0)


def test_importing_and_reading_the_data_never_imports_torchvision_or_matplotlib():
    code = (
        "import sys, capslib.data as d; d.to_tensors(d.mnist(train=False)); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torchvision', 'matplotlib', 'PIL'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_explicit_root_without_files_raises(tmp_path):
    with pytest.raises(data.DataNotFoundError, match=re.escape(str(tmp_path))):
        data.mnist(train=False, root=tmp_path)


def test_an_explicit_torchvision_root_serves_the_same_items(tmp_path, mnist_test):
    """``root=``: torchvision's own MNIST under a user's folder (here: the bundled gzips in its raw/)."""
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(BUNDLED_MNIST, raw)
    for name in data.IDX_FILES:
        (raw / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
    theirs = data.mnist(train=False, root=tmp_path)
    images, labels = data.to_tensors(theirs)
    ours, our_labels = data.to_tensors(mnist_test)
    assert torch.equal(images, ours) and torch.equal(labels, our_labels)
    assert torch.equal(theirs[7][0], mnist_test[7][0]) and theirs[7][1] == mnist_test[7][1]


# --- datasets by name -----------------------------------------------------------------------------


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="nope"):
        data.load_dataset("nope")


def test_load_dataset_by_name(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert len(data.load_dataset("MNIST", train=False)) == 10_000


@pytest.mark.skipif(
    not data.DEBIAN_FASHION_MNIST.exists(), reason=f"{data.DEBIAN_FASHION_MNIST} not installed (dataset-fashion-mnist)"
)
def test_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))  # nothing there: falls back to the Debian copy
    train = data.load_dataset("fashion_mnist", train=True)
    test = data.fashion_mnist(train=False)
    assert len(train) == 60_000 and len(test) == 10_000
    assert torch.as_tensor(train.targets).bincount(minlength=10).tolist() == [6000] * 10
    assert torch.as_tensor(test.targets).bincount(minlength=10).tolist() == [1000] * 10
    image, _ = test[0]
    assert image.shape == (1, 28, 28) and 0.0 <= image.min() and image.max() <= 1.0
    assert test.classes[test[0][1]] == "Ankle boot"
    assert not any(tmp_path.iterdir())  # nothing written into the data folder


# --- random_shift ---------------------------------------------------------------------------------


def shift_reference(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` ``(C, H, W)`` moved down by ``dy`` and right by ``dx`` pixels, zero filled."""
    _, height, width = image.shape
    out = torch.zeros_like(image)
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        :, max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


def find_shift(original: torch.Tensor, shifted: torch.Tensor, max_shift: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-max_shift, max_shift + 1)
        for dx in range(-max_shift, max_shift + 1)
        if torch.equal(shift_reference(original, dy, dx), shifted)
    ]


def test_random_shift_is_an_exact_integer_shift():
    images = torch.rand(400, 3, 9, 11, generator=torch.Generator().manual_seed(0)) + 0.1  # no zero pixel
    shifted = random_shift(images, max_shift=2, generator=torch.Generator().manual_seed(1))
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    seen = set()
    for original, moved in zip(images, shifted, strict=True):
        matches = find_shift(original, moved, 2)
        assert len(matches) == 1, "not a single integer shift within +-2 px applied to every channel"
        seen.add(matches[0])
    # Every one of the 25 shifts, both extremes included, is drawn.
    assert seen == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_random_shift_on_mnist_digits(mnist_test):
    images = torch.stack([mnist_test[i][0] for i in range(16)])
    shifted = random_shift(images, generator=torch.Generator().manual_seed(2))
    for original, moved in zip(images, shifted, strict=True):
        assert find_shift(original, moved, 2), "not a shift of the digit"


def test_random_shift_preserves_mass_with_empty_border():
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    images[:, :, :2] = 0
    images[:, :, -2:] = 0
    images[:, :, :, :2] = 0
    images[:, :, :, -2:] = 0
    shifted = random_shift(images, max_shift=2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(shifted.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))
    assert not torch.equal(shifted, images)


def test_random_shift_zero_is_identity():
    images = torch.rand(4, 1, 28, 28)
    out = random_shift(images, max_shift=0)
    assert torch.equal(out, images)


def test_random_shift_generator_is_reproducible():
    images = torch.rand(16, 1, 28, 28)
    a = random_shift(images, generator=torch.Generator().manual_seed(5))
    b = random_shift(images, generator=torch.Generator().manual_seed(5))
    c = random_shift(images, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_shift_bad_arguments():
    with pytest.raises(ValueError):
        random_shift(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(torch.rand(2, 1, 28, 28), max_shift=-1)


# --- splits and tensors ---------------------------------------------------------------------------


def test_split_train_val(mnist_train):
    train, val = data.split_train_val(mnist_train)
    assert len(train) == 55_000 and len(val) == 5_000
    assert list(val.indices) == list(range(55_000, 60_000))  # the LAST 5,000
    assert set(train.indices).isdisjoint(val.indices)
    assert set(train.indices) | set(val.indices) == set(range(60_000))
    assert torch.equal(val[0][0], mnist_train[55_000][0])
    with pytest.raises(ValueError, match="val_size"):
        data.split_train_val(mnist_train, val_size=60_000)
    with pytest.raises(ValueError, match="val_size"):
        data.split_train_val(mnist_train, val_size=0)


def test_to_tensors_matches_items(mnist_train, mnist_test, raw_test_images):
    images, labels = data.to_tensors(mnist_test)
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    assert images.min() == 0.0 and images.max() == 1.0
    torch.testing.assert_close(images[:, 0], torch.from_numpy(raw_test_images.astype(np.float32)) / 255.0)
    for index in (0, 17, 9999):
        image, label = mnist_test[index]
        assert torch.equal(images[index], image) and labels[index].item() == label

    train, val = data.split_train_val(mnist_train)
    val_images, val_labels = data.to_tensors(val)
    assert val_images.shape == (5_000, 1, 28, 28)
    for k in (0, 1, 4_999):
        image, label = val[k]
        assert torch.equal(val_images[k], image) and val_labels[k].item() == label

    nested = Subset(val, [4_999, 3, 10])
    nested_images, nested_labels = data.to_tensors(nested)
    for k in range(3):
        image, label = nested[k]
        assert torch.equal(nested_images[k], image) and nested_labels[k].item() == label
    assert torch.equal(nested_images[0], mnist_train[59_999][0])


class _PlainDataset(Dataset):
    def __init__(self) -> None:
        self.images = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(8))

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int):
        return self.images[index], index % 3


def test_to_tensors_generic_dataset():
    images, labels = data.to_tensors(_PlainDataset())
    assert torch.equal(images, _PlainDataset().images)
    assert labels.tolist() == [0, 1, 2, 0, 1] and labels.dtype == torch.int64


def test_to_tensors_honours_a_custom_transform(mnist_test):
    """A dataset with its own transform is not read through the raw-pixel fast path."""
    inverted = data.mnist(train=False, transform=lambda image: 1.0 - image)  # image: (1, 28, 28) in [0, 1]
    images, labels = data.to_tensors(Subset(inverted, range(3)))
    plain, plain_labels = data.to_tensors(Subset(mnist_test, range(3)))
    torch.testing.assert_close(images, 1.0 - plain)
    assert torch.equal(labels, plain_labels)
