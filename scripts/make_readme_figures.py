"""Regenerate the README's figures from the shipped model and its training log.

python scripts/make_readme_figures.py      # writes docs/figures/*.png
"""

from __future__ import annotations

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
    fig.tight_layout()
    path = OUT / "training_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def reconstructions() -> Path:
    """The first 12 test digits, the class the model reads, and the decoder's reconstruction."""
    model = capslib.load_pretrained(device="cpu")
    images, labels = to_tensors(torch.utils.data.Subset(mnist(train=False), range(12)))
    out = model(images)
    fig, axes = plt.subplots(2, 12, figsize=(12, 2.6))
    for k in range(12):
        axes[0, k].imshow(images[k, 0], cmap="gray_r")
        axes[0, k].set_title(f"label {labels[k].item()}", fontsize=8)
        axes[1, k].imshow(out.reconstructions[k, 0], cmap="gray_r")
        axes[1, k].set_title(f"read {out.predictions[k].item()} ({out.lengths[k].max():.2f})", fontsize=8)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("test image")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle("Shipped CapsNet: test digits and their reconstructions from the winning 16-D digit capsule")
    fig.tight_layout()
    path = OUT / "reconstructions.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for make in (training_curve, reconstructions):
        print("wrote", make().relative_to(REPO))
