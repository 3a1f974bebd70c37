"""Routing measured: the numbers that say how far dynamic routing moves, iteration by iteration.

Notebooks 03 and 06 use these to show *why* routing barely changes a trained MNIST CapsNet:
``s_j = sum_i c_ij u_hat_{j|i}`` adds up 1152 votes, so each vote must be short for ``|s_j|`` to
stay in squash's useful range; then the agreement ``u_hat . v`` that is added to the logits ``b``
is small, and the softmax over ``b`` hardly leaves ``1/N_out``.

Everything here reads :func:`capslib.dynamic_routing`'s trace; nothing changes the model. The one
exception is labelled: an ``agreement_scale`` other than 1 (``dynamic_routing(...,
agreement_scale=k)``) multiplies the agreement by ``k`` to show what routing *would* do with
stronger agreement. That is an exploration, not the paper's algorithm (the paper's factor is 1).

Shapes use the package vocabulary: ``B`` batch, ``N_in`` input capsules (1152), ``N_out`` output
capsules (10), ``D_out`` their dimension (16), ``R`` routing iterations.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..evaluation.predict import predict
from ..routing import RoutingResult, check_iterations, dynamic_routing
from ..utils import check_index, eval_mode

__all__ = [
    "ValueTable",
    "model_prediction_vectors",
    "trace_values",
    "routing_statistics",
    "routing_statistics_of_images",
    "predictions_by_iterations",
]


@dataclass
class ValueTable:
    """Named columns of numbers, one row per routing iteration; prints as text, renders as HTML.

    Attributes:
        columns: the column names; the first is ``"iteration"`` (1-based).
        rows: one tuple of numbers per row.
        caption: a line printed above the table (what was measured, on what).
    """

    columns: tuple[str, ...]
    rows: list[tuple[float, ...]]
    caption: str = ""
    digits: int = field(default=4, repr=False)

    def column(self, name: str) -> list[float]:
        """All values of the column ``name``."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {list(self.columns)}")
        k = self.columns.index(name)
        return [row[k] for row in self.rows]

    def _cell(self, value: float) -> str:
        if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{self.digits}f}" if abs(value) < 1e4 else f"{value:.{self.digits}g}"

    def __str__(self) -> str:
        cells = [self.columns] + [tuple(self._cell(v) for v in row) for row in self.rows]
        widths = [max(len(row[k]) for row in cells) for k in range(len(self.columns))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(([self.caption] if self.caption else []) + lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(name)}</th>" for name in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{self._cell(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        caption = f"<caption style='text-align:left'>{html.escape(self.caption)}</caption>" if self.caption else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __len__(self) -> int:
        return len(self.rows)


def model_prediction_vectors(
    model: torch.nn.Module, images: torch.Tensor, return_primary: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The prediction vectors ``u_hat`` a CapsNet routes for ``images``, without routing them.

    Args:
        model: a capsule classifier of capslib (:class:`capslib.CapsNet`,
            :class:`capslib.EfficientCapsNet`, or any model with a ``primary_capsules(images)``
            method and a ``digit_caps`` :class:`capslib.RoutingCaps`). Run in eval mode, without
            gradients; its mode is restored after.
        images: ``(B, C, H, W)`` images in [0, 1].
        return_primary: also return the primary capsules ``u`` the votes are made from.

    Returns:
        ``u_hat`` ``(B, N_in, N_out, D_out)``, or with ``return_primary`` ``(u, u_hat)`` with ``u``
        ``(B, N_in, D_in)`` (squashed primary capsules); on the model's device.
    """
    model.check_images(images)
    device = next(model.parameters()).device
    with eval_mode(model), torch.no_grad():
        x = images.to(device=device, dtype=next(model.parameters()).dtype)
        u = model.primary_capsules(x)  # (B, N_in, D_in): the model's own layers, whatever they are
        u_hat = model.digit_caps.prediction_vectors(u)  # (B, N_in, N_out, D_out)
    return (u, u_hat) if return_primary else u_hat


class _PredictionVectors(torch.nn.Module):
    """A CapsNet cut before its routing, ``images -> u_hat``: what :func:`capslib.evaluation.predict.predict`
    runs over many images when the routing is done here, not by the model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # predict() puts this mode back on the model afterwards

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return model_prediction_vectors(self.model, images)  # (B, N_in, N_out, D_out)


def _agreements(result: RoutingResult) -> list[torch.Tensor]:
    """``u_hat . v`` of every iteration, ``(B, N_in, N_out)`` each: what that iteration adds to
    ``b`` (the last one's would only feed an iteration that does not run)."""
    return [torch.einsum("bijd,bjd->bij", result.u_hat, step.v) for step in result.trace]


def trace_values(result: RoutingResult, input_capsule: int, output_capsule: int, example: int = 0) -> ValueTable:
    """The values behind the shapes: one input capsule ``i`` and output capsule ``j``, per iteration.

    Args:
        result: ``dynamic_routing(..., return_trace=True)`` (with any ``agreement_scale``).
        input_capsule: ``i`` in ``[0, N_in)``.
        output_capsule: ``j`` in ``[0, N_out)``.
        example: which example of the batch.

    Returns:
        A :class:`ValueTable` with columns ``iteration``, ``b_ij`` (the logit the iteration's
        softmax used), ``c_ij``, ``|u_hat_j|i|``, ``agreement`` (``u_hat_{j|i} . v_j``, added to
        ``b_ij`` before the next iteration), ``|s_j|`` and ``|v_j|``.
    """
    batch, num_in, num_out, _ = result.u_hat.shape
    example = check_index("example", example, batch)
    i = check_index("input_capsule", input_capsule, num_in)
    j = check_index("output_capsule", output_capsule, num_out)
    vote = result.u_hat[example, i, j]  # (D_out,)
    rows = []
    for r, step in enumerate(result.trace):
        v_j = step.v[example, j]  # (D_out,)
        rows.append(
            (
                r + 1,
                float(step.b[example, i, j]),
                float(step.c[example, i, j]),
                float(torch.linalg.vector_norm(vote, dim=-1)),
                float(torch.dot(vote, v_j)),
                float(torch.linalg.vector_norm(step.s[example, j], dim=-1)),
                float(torch.linalg.vector_norm(v_j, dim=-1)),
            )
        )
    columns = ("iteration", "b_ij", "c_ij", "|u_hat_j|i|", "agreement", "|s_j|", "|v_j|")
    caption = f"input capsule i={i}, output capsule j={j}, example {example}"
    return ValueTable(columns, rows, caption)


STATISTICS_COLUMNS = (
    "iteration",
    "|s| winner",
    "|s| others",
    "|v| winner",
    "|v| others",
    "agreement winner",
    "agreement others",
    "mean |delta b|",
    "c winner",
    "max c",
    "entropy of c",
)


def _statistics_per_example(result: RoutingResult) -> torch.Tensor:
    """Each statistic of each example and iteration, ``(B, R, len(STATISTICS_COLUMNS) - 1)``, then
    the example's mean vote length ``|u_hat|`` in one more column, ``(B, R * 10 + 1)`` in all; the
    winner is each example's longest final output."""
    u_hat = result.u_hat  # (B, N_in, N_out, D_out)
    batch, _, num_out, _ = u_hat.shape
    winners = torch.linalg.vector_norm(result.v, dim=-1).argmax(dim=1)  # (B,)
    is_winner = torch.nn.functional.one_hot(winners, num_out).bool()  # (B, N_out)
    others = (~is_winner).to(u_hat.dtype) / max(num_out - 1, 1)  # (B, N_out): averages the others
    rows = []
    for step, agreement in zip(result.trace, _agreements(result), strict=True):
        s_len = torch.linalg.vector_norm(step.s, dim=-1)  # (B, N_out)
        v_len = torch.linalg.vector_norm(step.v, dim=-1)  # (B, N_out)
        per_out = agreement.mean(dim=1)  # (B, N_out): mean over the input capsules
        c_winner = step.c.gather(2, winners[:, None, None].expand(-1, step.c.shape[1], 1))  # (B, N_in, 1)
        entropy = -(step.c * step.c.clamp_min(1e-30).log()).sum(dim=2)  # (B, N_in): nats
        rows.append(
            torch.stack(
                [
                    s_len[is_winner],
                    (s_len * others).sum(dim=1),
                    v_len[is_winner],
                    (v_len * others).sum(dim=1),
                    per_out[is_winner],
                    (per_out * others).sum(dim=1),
                    agreement.abs().mean(dim=(1, 2)),
                    c_winner.mean(dim=(1, 2)),
                    step.c.amax(dim=2).mean(dim=1),
                    entropy.mean(dim=1),
                ],
                dim=1,
            )  # (B, 10)
        )
    vote_length = torch.linalg.vector_norm(u_hat, dim=-1).mean(dim=(1, 2))  # (B,)
    return torch.cat([torch.stack(rows, dim=1).reshape(batch, -1), vote_length[:, None]], dim=1)  # (B, R*10 + 1)


def _statistics_table(per_example: torch.Tensor, num_in: int, num_out: int, agreement_scale: float) -> ValueTable:
    """The means over the examples of :func:`_statistics_per_example`'s ``(B, R * 10 + 1)``."""
    count = per_example.shape[0]
    sums = per_example.double().sum(dim=0)  # (R * 10 + 1,)
    means, vote_length = (sums[:-1] / count).view(-1, len(STATISTICS_COLUMNS) - 1), float(sums[-1]) / count
    rows = [(r + 1, *(float(x) for x in means[r])) for r in range(means.shape[0])]
    what = "routing" if agreement_scale == 1 else f"routing with the agreement x{agreement_scale:g} (not the paper)"
    caption = (
        f"{what}: means over {count} example(s) and their {num_in} input capsules; winner = the longest "
        f"final output; mean |u_hat| = {vote_length:.4f}; uniform coupling c = 1/{num_out} = "
        f"{1 / num_out:.4f}, entropy ln {num_out} = {math.log(num_out):.4f} nats; the last row's "
        f"agreement is not added (no iteration follows)"
    )
    return ValueTable(STATISTICS_COLUMNS, rows, caption)


def routing_statistics(u_hat: torch.Tensor, iterations: int = 3, agreement_scale: float = 1.0) -> ValueTable:
    """How far routing moves, iteration by iteration, averaged over a batch.

    Columns (means over the batch and, where it applies, the input capsules): the lengths of
    ``s`` and ``v`` for the winning output and the others; the mean agreement ``u_hat . v``
    with the winner and with the others; ``mean |delta b|``, the size of what the iteration adds
    to the logits; ``c winner``; ``max c`` (each input capsule's largest coupling); and the
    entropy of each input capsule's coupling in nats (``ln N_out`` is uniform).

    Args:
        u_hat: ``(B, N_in, N_out, D_out)`` prediction vectors.
        iterations: ``R >= 1``.
        agreement_scale: 1 is the paper; other values are an exploration, not the paper's
            algorithm (see :func:`capslib.dynamic_routing`), and the caption says so.

    Returns:
        A :class:`ValueTable` with one row per iteration.
    """
    result = dynamic_routing(u_hat, iterations, return_trace=True, agreement_scale=agreement_scale)
    return _statistics_table(_statistics_per_example(result), u_hat.shape[1], u_hat.shape[2], agreement_scale)


def _check_batch_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def routing_statistics_of_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    iterations: int = 3,
    agreement_scale: float = 1.0,
    batch_size: int = 250,
    progress: bool = True,
) -> ValueTable:
    """:func:`routing_statistics` of a trained model over many images, in batches (exact means).

    Args:
        model: a :class:`capslib.CapsNet`; its own routing is not used, only its ``u_hat``.
        images: ``(B, C, H, W)`` images in [0, 1].
        iterations, agreement_scale: as in :func:`routing_statistics`.
        batch_size: images per batch (memory: ``batch_size`` ``u_hat`` of ``N_in * N_out * D_out`` floats).
        progress: show a progress bar.
    """
    _check_batch_size(batch_size)

    def statistics(u_hat: torch.Tensor) -> torch.Tensor:  # (b, N_in, N_out, D_out) -> (b, R * 10 + 1)
        return _statistics_per_example(
            dynamic_routing(u_hat, iterations, return_trace=True, agreement_scale=agreement_scale)
        )

    votes = _PredictionVectors(model)
    per_example = predict(votes, images, batch_size, statistics, progress=progress, description="routing statistics")
    num_in, num_out = model.digit_caps.in_capsules, model.digit_caps.out_capsules
    return _statistics_table(per_example, num_in, num_out, agreement_scale)


def predictions_by_iterations(
    model: torch.nn.Module,
    images: torch.Tensor,
    iterations: Sequence[int] = (1, 3, 10),
    batch_size: int = 250,
    progress: bool = True,
) -> dict[int, torch.Tensor]:
    """The model's predicted classes when the same ``u_hat`` is routed with each iteration count.

    Args:
        model: a trained :class:`capslib.CapsNet`.
        images: ``(B, C, H, W)`` images in [0, 1].
        iterations: the iteration counts to compare (each ``>= 1``).
        batch_size: images per batch.
        progress: show a progress bar.

    Returns:
        ``{R: (B,) predicted classes}`` on the CPU, one entry per iteration count.
    """
    counts = [check_iterations(r) for r in iterations]
    if not counts:
        raise ValueError("iterations must name at least one iteration count, got an empty sequence")
    _check_batch_size(batch_size)

    def classes(u_hat: torch.Tensor) -> torch.Tensor:  # (b, N_in, N_out, D_out) -> (b, len(counts))
        routed = [dynamic_routing(u_hat, iterations=r)[0] for r in counts]  # each (b, N_out, D_out)
        return torch.stack([torch.linalg.vector_norm(v, dim=-1).argmax(dim=1) for v in routed], dim=1)

    found = predict(_PredictionVectors(model), images, batch_size, classes, progress=progress, description="routing")
    return {r: found[:, k] for k, r in enumerate(counts)}
