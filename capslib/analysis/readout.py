"""Can the amount of a transformation be read off the change of a feature vector? A linear read-out.

Equivariance means that the CHANGE of a feature vector, ``f(x') - f(x)``, tells how the input moved;
a bigger relative change alone does not (a vector can change a lot in ways that say nothing about
the movement). The test here fits the amount (e.g. a shift in pixels) as a linear function of the
change on one half of the digits and scores the fit on the other half with ``R^2``: 1 means the
change tells the amount exactly (linearly), 0 no better than always guessing the mean amount.

Shapes use the package vocabulary; ``A`` is the number of amounts, ``F`` a feature's size (16 for a
pose, 256 for a pooled feature).
"""

from __future__ import annotations

import torch

__all__ = ["linear_readout"]


def linear_readout(
    features: torch.Tensor,
    reference: torch.Tensor,
    amounts: torch.Tensor,
    max_amount: float | None = None,
    ridge: float = 1e-3,
) -> float:
    """``R^2`` of a least-squares fit ``amount ~ w . (features - reference) + w_0``, fitted on the
    first half of the digits and tested on the second half.

    Args:
        features: ``(A, B, F)`` the feature of each of ``B`` digits after each of ``A`` amounts
            (e.g. :func:`capslib.analysis.equivariance.measure_equivariance`'s ``poses``).
        reference: ``(B, F)`` the same feature of the untransformed digits.
        amounts: ``(A,)`` the amounts (pixels, degrees).
        max_amount: keep only amounts with ``|amount| <= max_amount`` (None: all).
        ridge: a small ridge added to the normal equations, so that a feature with constant
            components (a pooled channel that never changes) still gives a solution.

    Returns:
        ``R^2`` on the held-out digits, a float (at most 1; below 0 when the fit is worse than the mean).
    """
    if features.dim() != 3 or reference.dim() != 2 or features.shape[1:] != reference.shape:
        raise ValueError(
            "expected features (A, B, F) and reference (B, F), "
            f"got {tuple(features.shape)} and {tuple(reference.shape)}"
        )
    amounts = torch.as_tensor(amounts, dtype=torch.float64).flatten()
    if len(amounts) != features.shape[0]:
        raise ValueError(f"expected one amount per row of features ({features.shape[0]}), got {len(amounts)}")
    if features.shape[1] < 2:
        raise ValueError(f"need at least 2 digits (half to fit, half to test), got {features.shape[1]}")
    keep = torch.ones_like(amounts, dtype=torch.bool) if max_amount is None else amounts.abs() <= max_amount  # (A,)
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 amounts within max_amount={max_amount}, got {int(keep.sum())}")
    change = (features.double() - reference.double())[keep.to(features.device)].cpu()  # (A', B, F)
    target = amounts[keep].view(-1, 1).expand(change.shape[:2])  # (A', B)
    design = torch.cat([change, torch.ones(*change.shape[:2], 1, dtype=torch.float64)], dim=-1)  # (A', B, F + 1)
    half = design.shape[1] // 2
    x_fit, y_fit = design[:, :half].flatten(0, 1), target[:, :half].flatten()  # (A' * half, F + 1), (A' * half,)
    x_test, y_test = design[:, half:].flatten(0, 1), target[:, half:].flatten()  # (A' * (B - half), F + 1)
    normal = x_fit.T @ x_fit + ridge * torch.eye(design.shape[-1], dtype=torch.float64)  # (F + 1, F + 1)
    weights = torch.linalg.solve(normal, x_fit.T @ y_fit)  # (F + 1,)
    residual = y_test - x_test @ weights  # (A' * (B - half),)
    return float(1 - (residual**2).sum() / ((y_test - y_test.mean()) ** 2).sum())
