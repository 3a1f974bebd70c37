"""Loading the shipped pretrained models and a learner's own training checkpoints.

Each shipped model lives in ``<data dir>/pretrained/`` (the repository's ``data/pretrained/``, or
``$CAPSNET_DATA/pretrained/``) as two files: ``<name>.pt``, a half-precision state dict, and
``<name>.json``, its model card (how it was trained, what it measured, and its ``model_config``).
"""

from __future__ import annotations

import inspect
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from .baselines import BASELINES, BaselineCNN
from .efficient_capsnet import EfficientCapsNet
from .model import CapsNet
from .utils import atomic_write, data_dir, get_device, write_json_atomic

__all__ = [
    "PRETRAINED_NAME",
    "pretrained_dir",
    "load_pretrained",
    "load_checkpoint",
    "save_pretrained",
    "model_card",
    "model_from_config",
    "read_torch_file",
]

PRETRAINED_NAME = "capsnet_mnist"


def pretrained_dir() -> Path:
    """Folder of the shipped weights: ``<data dir>/pretrained``."""
    return data_dir() / "pretrained"


def model_card(name: str = PRETRAINED_NAME) -> dict:
    """The shipped model's card (a dict read from ``<name>.json``)."""
    path = pretrained_dir() / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no model card at {path}. The pretrained model ships with the repository in data/pretrained/; "
            "set CAPSNET_DATA if your data folder is elsewhere."
        )
    return json.loads(path.read_text())


def read_torch_file(path: str | Path, expected: str, mmap: bool = False):
    """``torch.load(path, weights_only=True)`` onto the CPU, for every checkpoint capslib reads.

    ``mmap=True`` maps the file instead of reading it: tensors are paged in only when touched, so a
    caller that wants a checkpoint's position, not its 100 MB of weights, reads almost nothing.

    ``weights_only`` loads tensors and plain containers only: a file holding pickled objects is
    refused, since unpickling them could run code.

    Raises:
        ValueError: naming ``path`` and ``expected`` (what it should hold, e.g. "a capslib training
            checkpoint") when the file is truncated, corrupt, not a ``torch.save`` file, or holds
            pickled objects; PyTorch's own message, a screenful, is cut to its gist.
        OSError: when the file cannot be read at all (missing, no permission).
    """
    try:
        with warnings.catch_warnings():
            # a plain pickle (protocol 4+) warns before it fails: the error below says it better
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError:
        raise
    except Exception as err:
        text = str(err)
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if pickled:
            problem = f"it holds pickled Python objects ({pickled[1]}), which capslib never loads: that could run code"
        elif isinstance(err, pickle.UnpicklingError) or not text.strip():
            problem = "it is not a file torch.save wrote, or it is truncated or corrupt"
        else:
            gist = text.strip().splitlines()[0].split(". ")[0][:120]  # the first sentence says it
            problem = f"it is truncated or corrupt ({type(err).__name__}: {gist})"
        # from None: the chained PyTorch error adds a screenful and nothing a reader can act on
        raise ValueError(f"{path} is not a readable checkpoint: expected {expected}, but {problem}") from None


def _finish(model: CapsNet, device) -> CapsNet:
    model.to(get_device(device))
    model.eval()
    return model


def load_pretrained(device: str | torch.device | None = None, name: str = PRETRAINED_NAME) -> CapsNet:
    """The shipped CapsNet, in float32 and eval mode, on ``device`` (default: CUDA, MPS, else CPU).

    Raises:
        FileNotFoundError: if the weights or the card are missing, saying where it looked.
        ValueError: if the weights file is truncated, corrupt or holds pickled objects.
    """
    weights = pretrained_dir() / f"{name}.pt"
    if not weights.exists():
        raise FileNotFoundError(
            f"no pretrained weights at {weights}. They ship with the repository (data/pretrained/); if your "
            "checkout lacks them, train your own (python -m capslib.train) and use capslib.load_checkpoint."
        )
    card = model_card(name)
    model = model_from_config(card["model_config"])
    state = read_torch_file(weights, "a state dict of model weights (the shipped pretrained model)")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return _finish(model, device)


def _arguments(cls: type, config: dict) -> dict:
    """``config`` as keyword arguments of ``cls``, refusing names it does not take with a ``ValueError``
    (Python's ``TypeError`` would name only the first, and not the file's ``model_config``)."""
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ValueError(
            f"the saved model_config has {unknown}, which {cls.__name__} does not take; "
            f"expected some of {sorted(accepted)}"
        )
    kwargs = dict(config)
    if "image_shape" in kwargs:  # a JSON card stores it as a list
        kwargs["image_shape"] = tuple(kwargs["image_shape"])
    return kwargs


def model_from_config(config: dict) -> torch.nn.Module:
    """The model a saved ``model_config`` describes (a checkpoint's or a model card's): a
    :class:`CapsNet`, with ``"model": "efficient-capsnet"`` a :class:`capslib.EfficientCapsNet`, or
    with ``"model": "cnn-baseline"`` (or another baseline) a
    :class:`capslib.baselines.BaselineCNN`. Configs without ``"model"`` are CapsNets.

    Raises:
        ValueError: for an unknown model, or arguments the model does not take.
    """
    config = dict(config)
    name = config.pop("model", "capsnet")
    if name == "capsnet":
        return CapsNet(**_arguments(CapsNet, config))
    if name == "efficient-capsnet":
        return EfficientCapsNet(**_arguments(EfficientCapsNet, config))
    if name in BASELINES or name == "cnn":
        config.pop("routing_iterations", None)
        return BaselineCNN(**_arguments(BaselineCNN, config))
    expected = ["capsnet", "efficient-capsnet", "cnn", *sorted(BASELINES)]
    raise ValueError(f"unknown model {name!r} in the saved model_config; expected one of {expected}")


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> torch.nn.Module:
    """A CapsNet from one of your own training runs (``<out>/best.pt`` or ``last.pt``), eval mode.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a capslib training checkpoint (or is truncated, corrupt,
            or holds pickled objects).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with python -m capslib.train --out <dir>")
    checkpoint = read_torch_file(path, "a capslib training checkpoint (best.pt or last.pt of python -m capslib.train)")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_config" not in checkpoint:
        raise ValueError(
            f"{path} is not a capslib training checkpoint (expected a dict with 'model' and 'model_config', "
            f"got {sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__})"
        )
    model = model_from_config(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"], strict=True)
    return _finish(model, device)


def save_pretrained(model: CapsNet, directory: str | Path, card: dict, name: str = PRETRAINED_NAME) -> Path:
    """Write ``model`` as a half-precision state dict plus its card, each atomically.

    Returns:
        The path of the weights file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    model_config = dict(model.config)
    if hasattr(model, "routing_iterations"):  # CapsNet's, which a user may have changed since building it
        model_config["routing_iterations"] = model.routing_iterations
    card = {**card, "model_config": model_config}
    write_json_atomic(card, directory / f"{name}.json")
    return atomic_write(directory / f"{name}.pt", lambda tmp: torch.save(state, tmp))
