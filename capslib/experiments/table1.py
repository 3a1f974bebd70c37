"""Table 1 of Sabour et al. 2017: its variants and its published test errors (no training here,
so figures can read them without importing the trainer)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Variant", "VARIANTS", "PAPER_TEST_ERROR"]


@dataclass(frozen=True)
class Variant:
    """One row of Table 1: the model and the settings that differ from the shared recipe."""

    name: str
    model: str  # TrainConfig.model
    routing_iterations: int | None  # None: not a CapsNet, or a routing that does not iterate
    reconstruction: bool
    routing: str | None = None  # TrainConfig.routing; None: the model's own


VARIANTS = {
    v.name: v
    for v in (
        Variant("capsnet-r1", "capsnet", 1, False),
        Variant("capsnet-r1-recon", "capsnet", 1, True),
        Variant("capsnet-r3", "capsnet", 3, False),
        Variant("capsnet-r3-recon", "capsnet", 3, True),
        Variant("cnn-baseline", "cnn-baseline", None, False),
        Variant("cnn-small", "cnn-small", None, False),
    )
}
"""The variants by name; ``cnn-baseline`` is the paper's 35.4M CNN, ``cnn-small`` a 1.1M one (CPU budgets)."""

PAPER_TEST_ERROR = {
    "capsnet-r1": "0.34 +- 0.032",
    "capsnet-r1-recon": "0.29 +- 0.011",
    "capsnet-r3": "0.35 +- 0.036",
    "capsnet-r3-recon": "0.25 +- 0.005",
    "cnn-baseline": "0.39",
}
"""Sabour et al. 2017, Table 1: MNIST test error in %, mean +- std over 3 trials (the baseline: one number)."""
