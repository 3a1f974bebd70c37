"""Dimension tracing: every stage of a CapsNet forward pass with its tensor shape."""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from ..utils import eval_mode

__all__ = ["ShapeTable", "trace_shapes"]


@dataclass
class ShapeTable:
    """Rows of ``(stage, shape, note)``; prints as a text table and renders as HTML in Jupyter."""

    rows: list[tuple[str, tuple[int, ...], str]]

    def __str__(self) -> str:
        header = ("stage", "shape", "note")
        cells = [header] + [(stage, str(tuple(shape)), note) for stage, shape, note in self.rows]
        widths = [max(len(row[k]) for row in cells) for k in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td style='text-align:left'>{html.escape(stage)}</td>"
            f"<td style='text-align:left'><code>{tuple(shape)}</code></td>"
            f"<td style='text-align:left'>{html.escape(note)}</td></tr>"
            for stage, shape, note in self.rows
        )
        return f"<table><thead><tr><th>stage</th><th>shape</th><th>note</th></tr></thead><tbody>{body}</tbody></table>"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, stage: str) -> tuple[int, ...]:
        """Shape of the first row named ``stage``."""
        for name, shape, _ in self.rows:
            if name == stage:
                return shape
        raise KeyError(stage)


def trace_shapes(model: torch.nn.Module, x: torch.Tensor) -> ShapeTable:
    """Run ``model`` once (eval mode, restored afterwards) and list every stage's shape.

    Works for :class:`capslib.CapsNet` and any model with the same attributes (``conv1``,
    ``primary_caps`` with an ``inner`` module, ``digit_caps``, optional ``decoder``).

    Args:
        model: a CapsNet-like model.
        x: ``(B, C, H, W)`` images.

    Returns:
        A :class:`ShapeTable`, from the image to the lengths and reconstructions, with one row
        for each of ``b, c, s, v`` of every routing iteration.
    """
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        model.conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("conv1", tuple(o.shape))),
        model.primary_caps.inner.register_forward_hook(lambda m, i, o: seen.__setitem__("primary", tuple(o.shape))),
    ]
    try:
        with eval_mode(model):
            out = model(x, return_trace=True)
    finally:
        for hook in hooks:
            hook.remove()

    caps = model.primary_caps
    u_hat = out.u_hat
    rows: list[tuple[str, tuple[int, ...], str]] = [
        ("input", tuple(x.shape), "B, C, H, W"),
        ("conv1 + ReLU", seen["conv1"], "B, filters, H', W' (after ReLU)"),
        ("primary conv", seen["primary"], f"B, {caps.num_types} types x {caps.in_dim} dims, grid"),
        ("primary capsules u", (u_hat.shape[0], u_hat.shape[1], caps.in_dim), "B, N_in, D_in (squashed)"),
        ("predictions u_hat = W u", tuple(u_hat.shape), "B, N_in, N_out, D_out"),
    ]
    for r, step in enumerate(out.trace, start=1):
        rows += [
            (f"routing {r}: b", tuple(step.b.shape), "logits (before this iteration's update)"),
            (f"routing {r}: c = softmax(b)", tuple(step.c.shape), "sums to 1 over N_out"),
            (f"routing {r}: s = sum c u_hat", tuple(step.s.shape), "B, N_out, D_out"),
            (f"routing {r}: v = squash(s)", tuple(step.v.shape), "B, N_out, D_out"),
        ]
    rows.append(("lengths |v|", tuple(out.lengths.shape), "class scores"))
    if out.reconstructions is not None:
        rows.append(("reconstructions", tuple(out.reconstructions.shape), "masked by the predicted class"))
    return ShapeTable(rows)
