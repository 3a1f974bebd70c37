"""Model cards: a trained model exported as a half-precision state dict beside a card that says
how it was trained and what THAT HALF-PRECISION FILE measures on the test set.

    python -m capslib.evaluate runs/capsnet/best.pt --export data/pretrained
    python -m capslib.evaluate runs/mm/best.pt --dataset multimnist --export data/pretrained --name capsnet_multimnist

The card's training facts (history, config, the selected epoch) come from the training checkpoint
itself, so a card can only be made from one, never from a shipped model.

What the training fields of a card mean (a card is made from ``best.pt``, the selected epoch's
checkpoint, so they describe the weights shipped, not the whole run):

- ``selected_epoch``: the epoch whose weights are shipped, chosen by ``selected_by`` on validation;
- ``epochs_trained``: the epochs behind those weights (equal to ``selected_epoch``). The run itself
  may have gone on: ``train_config["epochs"]`` is the length it was asked for, and epochs after the
  selected one did not validate better;
- ``train_seconds``: the run's wall time up to the selected checkpoint, on ``hardware``;
- ``test_*``: the shipped half-precision file, scored once on the whole test set at export;
  ``fp32_test_errors`` is the fp32 checkpoint's count, when it was measured.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from ..data import load_dataset
from ..pretrained import load_checkpoint, read_torch_file, save_pretrained
from ..utils import hardware_name
from .accuracy import TEST_SLICE, evaluate, evaluate_multimnist

__all__ = [
    "git_commit",
    "describe",
    "augmentation",
    "provenance",
    "export_mnist",
    "export_multimnist",
    "DATASET_NAMES",
    "PUBLISHED",
]


def git_commit() -> str:
    """The short hash of the repository's HEAD, or ``"unknown"`` outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
"""How a card names the datasets ``export_mnist`` scores on."""

PUBLISHED = {
    "fashion-mnist": [
        {"source": "https://github.com/naturomics/CapsNet-Tensorflow", "model": "CapsNet", "test_accuracy": 0.906},
        {"source": "https://github.com/XifengGuo/CapsNet-Keras", "model": "CapsNet", "test_accuracy": 0.936},
    ],
}
"""Public capsule-network results a card of that dataset is set beside (the repositories' READMEs)."""


def describe(model: torch.nn.Module, dataset: str = "mnist") -> str:
    """A model card's one-line description of ``model``, trained on ``dataset``."""
    trained_on = f"trained on {DATASET_NAMES[dataset]}"
    config = getattr(model, "config", {})
    if config.get("model") not in (None, "efficient-capsnet"):  # a capslib.baselines CNN
        parameters = sum(p.numel() for p in model.parameters())
        return (
            f"baseline CNN '{config['model']}' (capslib.baselines): convolutions {list(config['channels'])}, "
            f"hidden {list(config['hidden'])}, {parameters:,} parameters, cross-entropy, {trained_on}"
        )
    decoder = "with decoder" if getattr(model, "decoder", None) is not None else "without decoder"
    routing = config.get("routing", "dynamic")
    iterations = f", {model.routing_iterations} iterations" if routing in ("dynamic", "em") else ""
    if config.get("model") == "efficient-capsnet":
        without_decoder = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("decoder."))
        return (
            f"Efficient-CapsNet (Mazzia et al. 2021), {routing} routing{iterations}, {decoder}, "
            f"{without_decoder:,} parameters without the decoder, {trained_on}"
        )
    if routing != "dynamic":
        return f"CapsNet (Sabour et al. 2017) with {routing} routing{iterations}, {decoder}, {trained_on}"
    return f"CapsNet (Sabour et al. 2017), {model.routing_iterations} routing iterations, {decoder}, {trained_on}"


def augmentation(config: dict) -> str:
    """A card's words for the training augmentation a run's ``config`` used."""
    shift = config.get("max_shift")
    if config.get("augment", "shift") == "efficient":
        return (
            f"Efficient-CapsNet augmentation (capslib.data.augment): rotation up to 30 degrees for half the images, "
            f"shift +-{shift} px, a horizontal squish, a 4x4 erased patch"
        )
    return f"shift augmentation +-{shift} px"


def provenance(device: torch.device, config: dict, commit: str | None = None) -> dict:
    """The card entries every shipped model has: where and how it was made, and in what precision."""
    return {
        "hardware": hardware_name(device),
        "torch_version": str(torch.__version__),
        "seed": config.get("seed"),
        "train_config": config,
        "commit": commit or git_commit(),
        "dtype": "float16 state dict (loaded as float32)",
    }


def _half(checkpoint: Path, device: torch.device) -> tuple[dict, torch.nn.Module]:
    """The training checkpoint's contents, and its model with the weights as shipped: fp16, computing in fp32."""
    contents = read_torch_file(checkpoint, "a capslib training checkpoint")
    return contents, load_checkpoint(checkpoint, device).half().float()


def export_mnist(
    checkpoint: str | Path,
    directory: str | Path,
    name: str,
    device: torch.device,
    batch_size: int = 500,
    commit: str | None = None,
    fp32_errors: int | None = None,
    dataset: str = "mnist",
) -> tuple[Path, dict]:
    """Write the checkpoint's model in half precision and its card, scored on the test set of ``dataset``.

    Args:
        checkpoint: a training checkpoint (``best.pt``), or its run folder.
        fp32_errors: the test errors of the full-precision model, recorded beside the fp16 ones.
        dataset: ``"mnist"`` or ``"fashion-mnist"``: the 10,000 test images scored (the run's own,
            checked against its config).

    Returns:
        ``(path of the weights file, card)``.
    """
    if dataset not in DATASET_NAMES:
        raise ValueError(f"dataset must be one of {sorted(DATASET_NAMES)}, got {dataset!r}")
    checkpoint = _checkpoint_file(checkpoint)
    contents, half = _half(checkpoint, device)
    config = contents.get("config", {})
    if config.get("dataset", "mnist") != dataset:
        raise ValueError(
            f"the checkpoint was trained on {config.get('dataset')!r}, not {dataset!r}: score it on its own"
        )
    test_set = load_dataset(dataset, train=False)  # the 10,000 test images, never augmented
    full = evaluate(half, test_set, device=device, batch_size=batch_size, progress=False)
    sliced = evaluate(half, test_set, device=device, batch_size=batch_size, limit=TEST_SLICE, progress=False)
    history = contents.get("history", [])
    val_size = config.get("val_size", 5000)
    card = {
        "name": name,
        "description": describe(half, dataset),
        "dataset": DATASET_NAMES[dataset],
        "data": f"{DATASET_NAMES[dataset]} training images 0-{60000 - val_size - 1} (the last {val_size} validate), "
        f"{augmentation(config)}",
        "selected_epoch": contents.get("best_epoch"),
        "selected_by": f"validation accuracy on the last {val_size} training images (never the test set)",
        "val_accuracy": contents.get("best_val_accuracy"),
        "epochs_trained": len(history),
        "train_seconds": round(contents.get("elapsed_seconds", 0.0), 1),
        **provenance(device, config, commit),
        "test_accuracy": full.accuracy,
        "test_errors": full.errors,
        "test_images": full.total,
        "test_slice_images": TEST_SLICE,
        "test_slice_errors": sliced.errors,
        "fp32_test_errors": fp32_errors,
        "measured_by": "python -m capslib.evaluate <checkpoint> --export data/pretrained",
    }
    if dataset in PUBLISHED:
        card["published_capsnet_results"] = PUBLISHED[dataset]
    return save_pretrained(half, directory, card, name=name), card


def export_multimnist(
    checkpoint: str | Path,
    directory: str | Path,
    name: str,
    device: torch.device,
    batch_size: int = 500,
    commit: str | None = None,
    fp32_both_right: float | None = None,
) -> tuple[Path, dict]:
    """Write the checkpoint's MultiMNIST model in half precision and its card, scored (both digits
    right) on the fixed test pairs; arguments as :func:`export_mnist`.

    Returns:
        ``(path of the weights file, card)``.
    """
    checkpoint = _checkpoint_file(checkpoint)
    contents, half = _half(checkpoint, device)
    scored = evaluate_multimnist(half, batch_size=batch_size, progress=False)
    config = contents.get("config", {})
    train_digits = (config.get("train_limit") or 60000) - config.get("val_size", 5000)
    selected = contents.get("best_epoch")
    history = contents.get("history", [])
    card = {
        "name": name,
        "description": f"CapsNet (Sabour et al. 2017) at 36x36, {half.routing_iterations} routing iterations, "
        f"{'with' if half.decoder is not None else 'without'} decoder, trained on MultiMNIST pairs",
        "data": f"MultiMNIST pairs made on the fly from MNIST training digits 0-{train_digits - 1} (each digit "
        f"first once per epoch, a partner of another class, shifts up to 4 px); validation: fixed pairs of the "
        f"last {config.get('val_size', 5000)} training digits; test: capslib.data.multimnist.multimnist_test_set",
        "selected_epoch": selected,
        "selected_by": "both-right accuracy on the fixed validation pairs (never the test set)",
        "val_accuracy": contents.get("best_val_accuracy"),
        "epochs_trained": len(history),
        # Histories without "train_examples": every digit came first once per epoch.
        "pairs_seen": sum(r.get("train_examples", train_digits) for r in history[: selected or 0]),
        "pairs_seen_note": "training pairs seen by the selected checkpoint; the paper trained on 60M pairs",
        # Wall time of the run up to the selected epoch (histories without "elapsed_seconds": the
        # sum of epoch times, which misses the part of a resumed epoch done before the resume).
        "train_seconds": round(
            history[selected - 1].get("elapsed_seconds") or sum(r.get("epoch_seconds", 0.0) for r in history[:selected])
            if selected
            else 0.0,
            1,
        ),
        **provenance(device, config, commit),
        "test_both_right": scored.both_right,
        "test_errors": round((1 - scored.both_right) * scored.total),
        "test_at_least_one_right": scored.at_least_one_right,
        "test_pairs": scored.total,
        "fp32_test_both_right": fp32_both_right,
        "measured_by": "python -m capslib.evaluate <checkpoint> --dataset multimnist --export data/pretrained "
        "--name capsnet_multimnist",
    }
    return save_pretrained(half, directory, card, name=name), card


def _checkpoint_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "best.pt" if path.is_dir() else path
