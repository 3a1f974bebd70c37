"""Seeds and devices: the two things every notebook's Setup does."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

__all__ = ["seed_everything", "get_device", "eval_mode", "atomic_write", "check_index", "to_numpy"]


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every GPU) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators
    os.environ["PYTHONHASHSEED"] = str(seed)


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
    gets mode 0644 (``mkstemp`` makes 0600 files) before it appears under its name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
