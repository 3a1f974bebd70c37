"""The paper's equations as curves: squash (Eq. 1), the margin loss (Eq. 4), and the margin loss
beside cross-entropy with the gradients each one gives.

Pure plotting functions (the conventions are in :mod:`capslib.plots.common`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_squash", "plot_margin_loss", "plot_loss_comparison"]


def plot_squash(max_length: float = 6.0, ax=None):
    """Eq. 1 as a curve: output length ``|s|^2 / (1 + |s|^2)`` against input length ``|s|``; returns axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    norm = np.linspace(0.0, max_length, 400)
    ax.plot(norm, norm**2 / (1 + norm**2), label="squash: |s|^2 / (1 + |s|^2)")
    ax.plot(norm, np.minimum(norm, 1.0), "--", color="gray", label="identity, capped at 1")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xlabel("input length |s|")
    ax.set_ylabel("output length |v|")
    ax.set_title("Squash keeps the direction and maps lengths into [0, 1)")
    ax.legend(loc="lower right")
    return ax


def plot_margin_loss(m_plus: float = 0.9, m_minus: float = 0.1, lambda_: float = 0.5, ax=None):
    """Eq. 4 for one class against its capsule length ``|v_k|`` in [0, 1]; returns the axes.

    Present class (``T_k = 1``): ``max(0, m+ - |v|)^2``; absent class (``T_k = 0``):
    ``lambda * max(0, |v| - m-)^2``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    length = np.linspace(0.0, 1.0, 401)
    present = np.clip(m_plus - length, 0.0, None) ** 2
    absent = lambda_ * np.clip(length - m_minus, 0.0, None) ** 2
    ax.plot(length, present, color="tab:green", lw=2, label="class present (T_k = 1)")
    ax.plot(length, absent, color="tab:red", lw=2, label=f"class absent (T_k = 0), x lambda = {lambda_:.2f}")
    ax.axvline(m_plus, color="tab:green", ls="--", lw=1, label=f"m+ = {m_plus:.2f}")
    ax.axvline(m_minus, color="tab:red", ls="--", lw=1, label=f"m- = {m_minus:.2f}")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, max(1.0, float(present.max()), float(absent.max())) * 1.05)
    ax.set_xlabel("capsule length |v_k|")
    ax.set_ylabel("loss L_k")
    ax.set_title("Margin loss of one class")
    ax.legend(fontsize=8, loc="upper center")
    return ax


def plot_loss_comparison(m_plus: float = 0.9):
    """Margin loss vs cross-entropy for the true class: the loss, and the gradient the network receives.

    Both panels share one x axis, the true class's score: the softmax probability ``p`` for
    cross-entropy (loss ``-log p``), the capsule length ``|v|`` for the margin loss (loss
    ``max(0, m+ - |v|)^2``). The gradient is taken with respect to what each loss is fed: the
    logit ``z`` of the true class for cross-entropy (``d(-log p)/dz = p - 1``), the length
    ``|v|`` for the margin loss (``-2 max(0, m+ - |v|)``). Returns the figure.
    """
    score = np.linspace(0.005, 1.0, 400)
    margin = np.clip(m_plus - score, 0.0, None) ** 2
    margin_grad = -2.0 * np.clip(m_plus - score, 0.0, None)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax0.plot(score, -np.log(score), color="tab:purple", lw=2, label="cross-entropy -log p")
    ax0.plot(score, margin, color="tab:green", lw=2, label="margin loss, present class")
    ax0.axvline(m_plus, color="tab:green", ls="--", lw=1, label=f"m+ = {m_plus:.2f}")
    ax0.set_ylim(0.0, 3.0)
    ax0.set_xlabel("score of the true class (p for cross-entropy, |v| for margin)")
    ax0.set_ylabel("loss")
    ax0.set_title("Loss: cross-entropy is 0 only at p = 1")
    ax0.legend(fontsize=8)
    ax1.plot(score, score - 1.0, color="tab:purple", lw=2, label="cross-entropy: d(-log p)/dz = p - 1 (z: logit)")
    ax1.plot(score, margin_grad, color="tab:green", lw=2, label="margin: d loss/d|v| = -2 max(0, m+ - |v|)")
    ax1.axvline(m_plus, color="tab:green", ls="--", lw=1)
    ax1.axhline(0.0, color="k", lw=0.6)
    ax1.set_ylim(-2.1, 0.2)
    ax1.set_xlabel("score of the true class (p for cross-entropy, |v| for margin)")
    ax1.set_ylabel("gradient wrt the score fed to the loss")
    ax1.set_title("Gradient: cross-entropy's is 0 only at p = 1, the margin's from m+ on")
    ax1.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Present class: margin loss (m+ = {m_plus:.2f}) vs cross-entropy")
    fig.tight_layout()
    return fig
