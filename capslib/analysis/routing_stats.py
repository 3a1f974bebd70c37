"""Routing measured: the numbers that say how far dynamic routing moves, iteration by iteration.

Notebooks 03 and 06 use these to show *why* routing barely changes a trained MNIST CapsNet:
``s_j = sum_i c_ij u_hat_{j|i}`` adds up 1152 votes, so each vote must be short for ``|s_j|`` to
stay in squash's useful range; then the agreement ``u_hat . v`` that is added to the logits ``b``
is small, and the softmax over ``b`` hardly leaves ``1/N_out``.

Everything here reads :func:`capslib.dynamic_routing`'s trace; nothing changes the model.
:func:`route_with_agreement_scale` is the one exception, and it is labelled: it multiplies the
agreement by a factor to show what routing *would* do with stronger agreement. That is an
exploration, not the paper's algorithm (the paper's factor is 1).

Shapes use the package vocabulary: ``B`` batch, ``N_in`` input capsules (1152), ``N_out`` output
capsules (10), ``D_out`` their dimension (16), ``R`` routing iterations.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..functional import squash
from ..routing import RoutingResult, RoutingStep, check_iterations, dynamic_routing
from ..utils import check_index, eval_mode

__all__ = [
    "ValueTable",
    "model_prediction_vectors",
    "route_with_agreement_scale",
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


def model_prediction_vectors(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The prediction vectors ``u_hat`` a CapsNet routes for ``images``, without routing them.

    Args:
        model: a :class:`capslib.CapsNet` (or a model with ``conv1``, ``primary_caps`` and
            ``digit_caps`` like it). Run in eval mode, without gradients.
        images: ``(B, C, H, W)`` images in [0, 1].

    Returns:
        ``(B, N_in, N_out, D_out)`` prediction vectors, on the model's device.
    """
    model.check_images(images)
    device = next(model.parameters()).device
    with eval_mode(model), torch.no_grad():
        x = images.to(device=device, dtype=model.conv1.weight.dtype)
        features = torch.relu(model.conv1(x))  # (B, 256, 20, 20)
        u = model.primary_caps(features)  # (B, N_in, D_in)
        return model.digit_caps.prediction_vectors(u)  # (B, N_in, N_out, D_out)


def _check_u_hat(u_hat: torch.Tensor) -> None:
    if not isinstance(u_hat, torch.Tensor) or u_hat.dim() != 4:
        shape = tuple(u_hat.shape) if isinstance(u_hat, torch.Tensor) else type(u_hat).__name__
        raise ValueError(f"u_hat must have shape (B, N_in, N_out, D_out), got {shape}")


def route_with_agreement_scale(u_hat: torch.Tensor, iterations: int = 3, agreement_scale: float = 1.0) -> RoutingResult:
    """Procedure 1 with the agreement multiplied by ``agreement_scale``: NOT the paper's algorithm.

    ``b += agreement_scale * (u_hat . v)``. With ``agreement_scale=1`` this is exactly
    :func:`capslib.dynamic_routing` (tested); larger factors show how the coupling would polarise
    if the agreement were stronger. An exploration for the notebooks; no model uses it.

    Args:
        u_hat: ``(B, N_in, N_out, D_out)`` prediction vectors.
        iterations: ``R >= 1``.
        agreement_scale: a finite factor >= 0 (0 keeps the coupling uniform).

    Returns:
        A :class:`capslib.RoutingResult` with every iteration's ``b, c, s, v``.
    """
    iterations = check_iterations(iterations)
    _check_u_hat(u_hat)
    if (
        isinstance(agreement_scale, bool)
        or not isinstance(agreement_scale, (int, float))
        or not (math.isfinite(agreement_scale) and agreement_scale >= 0)
    ):
        raise ValueError(f"agreement_scale must be a finite number >= 0, got {agreement_scale!r}")
    b = u_hat.new_zeros(u_hat.shape[:3])  # (B, N_in, N_out)
    trace: list[RoutingStep] = []
    for r in range(iterations):
        c = torch.softmax(b, dim=2)  # (B, N_in, N_out): over the OUTPUT capsules
        # i: input capsule, j: output capsule, d: output dimension.
        s = torch.einsum("bij,bijd->bjd", c, u_hat)  # (B, N_out, D_out)
        v = squash(s, dim=-1)  # (B, N_out, D_out)
        trace.append(RoutingStep(b=b, c=c, s=s, v=v))
        if r < iterations - 1:
            b = b + agreement_scale * torch.einsum("bijd,bjd->bij", u_hat, v)  # (B, N_in, N_out)
    return RoutingResult(v=v, c=c, trace=trace, u_hat=u_hat)


def _agreements(result: RoutingResult) -> list[torch.Tensor]:
    """``u_hat . v`` of every iteration, ``(B, N_in, N_out)`` each: what that iteration adds to
    ``b`` (the last one's would only feed an iteration that does not run)."""
    return [torch.einsum("bijd,bjd->bij", result.u_hat, step.v) for step in result.trace]


def trace_values(result: RoutingResult, input_capsule: int, output_capsule: int, example: int = 0) -> ValueTable:
    """The values behind the shapes: one input capsule ``i`` and output capsule ``j``, per iteration.

    Args:
        result: ``dynamic_routing(..., return_trace=True)`` (or :func:`route_with_agreement_scale`).
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


def _statistics_sums(result: RoutingResult) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-iteration sums over the batch of each statistic, ``(R, len(STATISTICS_COLUMNS) - 1)``,
    and the sum of the mean vote length; the winner is each example's longest final output."""
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
                    s_len[is_winner].sum(),
                    (s_len * others).sum(),
                    v_len[is_winner].sum(),
                    (v_len * others).sum(),
                    per_out[is_winner].sum(),
                    (per_out * others).sum(),
                    agreement.abs().mean(dim=(1, 2)).sum(),
                    c_winner.mean(dim=(1, 2)).sum(),
                    step.c.amax(dim=2).mean(dim=1).sum(),
                    entropy.mean(dim=1).sum(),
                ]
            )
        )
    vote_length = torch.linalg.vector_norm(u_hat, dim=-1).mean(dim=(1, 2)).sum()  # sum over B
    return torch.stack(rows).double().cpu(), vote_length.double().cpu()


def _statistics_table(
    sums: torch.Tensor, vote_length: float, count: int, num_in: int, num_out: int, what: str
) -> ValueTable:
    rows = [(r + 1, *(float(x) / count for x in sums[r])) for r in range(sums.shape[0])]
    caption = (
        f"{what}: means over {count} example(s) and their {num_in} input capsules; winner = the longest "
        f"final output; mean |u_hat| = {vote_length / count:.4f}; uniform coupling c = 1/{num_out} = "
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
        agreement_scale: 1 is the paper; other values go through :func:`route_with_agreement_scale`
            (an exploration, not the paper's algorithm).

    Returns:
        A :class:`ValueTable` with one row per iteration.
    """
    result = route_with_agreement_scale(u_hat, iterations, agreement_scale)
    sums, vote_length = _statistics_sums(result)
    what = "routing" if agreement_scale == 1 else f"routing with the agreement x{agreement_scale:g} (not the paper)"
    return _statistics_table(sums, float(vote_length), u_hat.shape[0], u_hat.shape[1], u_hat.shape[2], what)


def _batches(images: torch.Tensor, batch_size: int, progress: bool, description: str):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (B, C, H, W) tensor, got {shape}")
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=description, unit="batch")
    for start in starts:
        yield images[start : start + batch_size]


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
        batch_size: images per batch (memory: about ``batch_size`` x 0.74 MB of ``u_hat``).
        progress: show a progress bar.
    """
    total, vote_total, count = None, 0.0, 0
    for chunk in _batches(images, batch_size, progress, "routing statistics"):
        u_hat = model_prediction_vectors(model, chunk)  # (b, N_in, N_out, D_out)
        sums, vote_length = _statistics_sums(route_with_agreement_scale(u_hat, iterations, agreement_scale))
        total = sums if total is None else total + sums
        vote_total += float(vote_length)
        count += chunk.shape[0]
    num_in, num_out = u_hat.shape[1], u_hat.shape[2]
    what = "routing" if agreement_scale == 1 else f"routing with the agreement x{agreement_scale:g} (not the paper)"
    return _statistics_table(total, vote_total, count, num_in, num_out, what)


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
    found: dict[int, list[torch.Tensor]] = {r: [] for r in counts}
    for chunk in _batches(images, batch_size, progress, "routing"):
        u_hat = model_prediction_vectors(model, chunk)  # (b, N_in, N_out, D_out)
        for r in counts:
            v, _ = dynamic_routing(u_hat, iterations=r)  # (b, N_out, D_out)
            found[r].append(torch.linalg.vector_norm(v, dim=-1).argmax(dim=1).cpu())  # (b,)
    return {r: torch.cat(found[r]) for r in counts}
