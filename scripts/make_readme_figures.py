"""Regenerate the README's figures from the shipped model, its training log and docs/runs/.

python scripts/make_readme_figures.py      # writes docs/figures/*.png
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib.data import mnist, to_tensors  # noqa: E402
from capslib.pretrained import model_card, pretrained_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "figures"


def _save(fig, name: str) -> Path:
    fig.tight_layout()
    path = OUT / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curve() -> Path:
    """Validation accuracy and training loss per epoch, from the shipped model's training log."""
    card = model_card()
    log = (pretrained_dir() / card["selection_sweep"]["train_log"]).read_text()
    rows = re.findall(r"epoch\s+(\d+)/\d+\s+loss ([\d.]+)\s+train acc ([\d.]+)\s+val acc ([\d.]+)", log)
    epochs = [int(r[0]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [float(r[1]) for r in rows], marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss (margin + 0.0005 x recon.)", title="Training loss", yscale="log")
    ax_acc.plot(epochs, [100 * float(r[2]) for r in rows], marker=".", label="train (augmented batches)")
    ax_acc.plot(epochs, [100 * float(r[3]) for r in rows], marker=".", label="validation (last 5,000 train images)")
    ax_acc.axvline(
        card["selected_epoch"], color="grey", linestyle=":", label=f"selected: epoch {card['selected_epoch']}"
    )
    ax_acc.set(
        xlabel="epoch",
        ylabel="accuracy (%)",
        ylim=(99.0, 100.0),
        title="Accuracy per epoch",
    )
    ax_acc.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Shipped model's run (stopped at epoch {epochs[-1]} by its time limit); the selected epoch scores "
        f"{100 * card['test_accuracy']:.2f}% on the 10,000 test images",
        fontsize=10,
    )
    return _save(fig, "training_curve.png")


def _log_val_errors(log: str, val_images: int = 5000) -> list[int]:
    return [round((1 - float(a)) * val_images) for a in re.findall(r"val acc ([\d.]+)", log)]


def validation_plateau() -> Path:
    """Validation errors per epoch of every later run beside the shipped one's, and validation vs
    test errors of each exported model: why no later model replaced the shipped one."""
    card = model_card()
    shipped = _log_val_errors((pretrained_dir() / card["selection_sweep"]["train_log"]).read_text())
    runs = REPO / "docs" / "runs"
    fig, (ax_val, ax_pair) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ax_val.plot(range(1, len(shipped) + 1), shipped, color="black", lw=2, label="shipped run (sweep 1, b)")
    for history in sorted(runs.glob("sweep*/*_history.json")):
        errors = [row["val_errors"] for row in json.loads(history.read_text())]
        continued = history.parent.name == "sweep4"  # sweeps 4 and 5 continue the shipped model's epoch 29
        start = card["selected_epoch"] if continued else 0
        ax_val.plot(
            range(start + 1, start + len(errors) + 1),
            errors,
            lw=1,
            alpha=0.7,
            color="tab:orange" if continued else "tab:blue",
        )
    ax_val.plot([], [], color="tab:blue", label="sweep 3: from scratch, weight averaging")
    ax_val.plot([], [], color="tab:orange", label="sweeps 4-5: continuing the shipped model")
    best = round((1 - card["val_accuracy"]) * 5000)
    ax_val.axhline(best, color="grey", linestyle=":", label=f"shipped model: {best} errors")
    ax_val.set(xlabel="epoch", ylabel="validation errors (of 5,000)", ylim=(best - 4, 45), title="Validation per epoch")
    ax_val.legend(fontsize=8, loc="upper right")

    exported = [("shipped", card)] + [
        (path.stem.split("_")[0], json.loads(path.read_text()))
        for path in sorted(runs.glob("sweep*/*_export_card.json"))
    ]
    for k, (_, c) in enumerate(exported):
        val_errors = round((1 - c["val_accuracy"]) * 5000)
        ax_pair.bar(k - 0.2, val_errors, width=0.4, color="tab:green", label="validation (chooses)" if k == 0 else None)
        ax_pair.bar(k + 0.2, c["test_errors"], width=0.4, color="tab:red", label="test (reported)" if k == 0 else None)
        ax_pair.text(k + 0.2, c["test_errors"] + 0.5, str(c["test_errors"]), ha="center", fontsize=8)
        ax_pair.text(k - 0.2, val_errors + 0.5, str(val_errors), ha="center", fontsize=8)
    ax_pair.set_xticks(range(len(exported)), [name for name, _ in exported])
    ax_pair.set(ylabel="errors", title="Exported models: validation ties", ylim=(0, 52))
    ax_pair.legend(fontsize=8, loc="upper right")
    fig.suptitle(
        "No later run goes below the shipped model's 14 validation errors (last 5,000 training images), "
        "so none replaces it, whatever its test score",
        fontsize=10,
    )
    return _save(fig, "validation_plateau.png")


@torch.no_grad()
def reconstructions(test_set: tuple[torch.Tensor, torch.Tensor] | None = None) -> Path:
    """The first 12 test digits, the class the model reads, and the decoder's reconstruction.

    ``test_set``: MNIST's test images ``(N, 1, 28, 28)`` and labels ``(N,)`` if already read (None: read them).
    """
    model = capslib.load_pretrained(device="cpu")
    if test_set is None:
        test_set = to_tensors(torch.utils.data.Subset(mnist(train=False), range(12)))
    images, labels = test_set[0][:12], test_set[1][:12]
    out = model(images)
    fig, axes = plt.subplots(2, 12, figsize=(12, 2.6))
    for k in range(12):
        axes[0, k].imshow(images[k, 0].numpy(), cmap="gray_r")
        axes[0, k].set_title(f"label {labels[k].item()}", fontsize=8)
        axes[1, k].imshow(out.reconstructions[k, 0].numpy(), cmap="gray_r")
        axes[1, k].set_title(f"read {out.predictions[k].item()} ({out.lengths[k].max():.2f})", fontsize=8)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("test image")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle("Shipped CapsNet: test digits and their reconstructions from the winning 16-D digit capsule")
    return _save(fig, "reconstructions.png")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for make in (training_curve, validation_plateau, reconstructions):
        print("wrote", make().relative_to(REPO))
