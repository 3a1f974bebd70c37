"""Seeds and devices (the two things every notebook's Setup does), where data lives, and writing files atomically."""

from __future__ import annotations

import errno
import json
import os
import platform
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "get_device",
    "eval_mode",
    "atomic_write",
    "write_json_atomic",
    "stale_temporaries",
    "check_index",
    "to_numpy",
    "DATA_ENV",
    "data_dir",
]

DATA_ENV = "CAPSNET_DATA"
"""Environment variable naming a data directory to use instead of the repository's ``data/``."""


def data_dir() -> Path:
    """``$CAPSNET_DATA`` if set, else the repository's ``data/`` folder (datasets, shipped weights)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every GPU) with ``seed``.

    String hashing is not seeded: ``PYTHONHASHSEED`` takes effect only when an interpreter starts,
    so set it in the shell where the iteration order of a set of strings must repeat.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """Pick a device: CUDA, then Apple MPS, then CPU for ``"auto"``/None; else check the named one.

    Raises:
        ValueError: for an unknown name, or a device this machine does not have.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cuda', 'mps' or 'cpu', got {device!r}") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch.cuda.is_available() is False on this machine")
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for, but Apple MPS is not available on this machine")
    return chosen


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``with eval_mode(model):`` runs the block with ``model.eval()`` and no gradients, then puts
    the model back in the mode it was in (training or not), even if the block raises."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Create ``path`` all at once: ``write(tmp)`` fills a temporary file beside it, then a rename.

    A reader (or a crash) never sees half a file: either the old file or the new one. The file
    gets mode 0644 (``mkstemp`` makes 0600 files) before it appears under its name. If the write
    fails, the temporary file is removed; a kill can still leave one (see :func:`stale_temporaries`).

    Raises:
        OSError: ``ENOSPC``, "no space left on <folder>", when the disk is full (the previous file
            at ``path``, if any, is kept), whatever form the writer's own error took.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        full = _disk_full(err, path.parent)  # asked before the temporary file frees its space
        Path(tmp).unlink(missing_ok=True)
        if full:
            kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
            raise OSError(errno.ENOSPC, f"no space left on {path.parent} (writing {path.name}): {kept}") from err
        raise
    return path


def write_json_atomic(obj, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON (a final newline) to ``path`` all at once (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


# Below this much free space a failed write is taken for a full disk: torch.save reports one as
# "basic_ios::clear: iostream error" or "file write failed", a RuntimeError without an errno.
FULL_DISK_BYTES = 16 * 2**20


def _disk_full(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(err, OSError | RuntimeError):
        return False  # an interrupt, a bug in the writer: not the disk's doing
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


def stale_temporaries(folder: str | Path, names: tuple[str, ...], suffix: str = ".tmp") -> list[Path]:
    """The temporary files that :func:`atomic_write` left in ``folder`` for files named ``names``
    (``.last.pt.k2j4_x9a.tmp``: a writer killed before its rename), and no other file."""
    pattern = re.compile("|".join(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}" for name in names))
    return sorted(p for p in Path(folder).glob(f".*{suffix}") if pattern.fullmatch(p.name))


def check_index(name: str, value: int, size: int) -> int:
    """``value`` if it lies in ``[0, size)``, else a ``ValueError`` naming ``name`` (Python's negative
    indices are refused too: in a picture of class ``-1`` nobody would know which class is meant)."""
    if not 0 <= int(value) < size:
        raise ValueError(f"{name} must lie in [0, {size}), got {value}")
    return int(value)


def to_numpy(x) -> np.ndarray:
    """A float numpy array on the CPU, for matplotlib: tensors handed to it directly are detached
    and converted by numpy's ``__array__`` protocol, which numpy 2 deprecates for them."""
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def hardware_name(device: torch.device) -> str:
    """The device in words for records and model cards: the GPU's name, or the CPU's model name
    (from ``/proc/cpuinfo`` where there is one) and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
