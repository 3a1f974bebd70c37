"""The CapsNet architecture drawn as boxes and arrows, with every tensor shape (matplotlib only).

The shapes are not typed in: :func:`plot_architecture` runs the model once through
:func:`capslib.trace_shapes` and writes the shapes it reports, and reads the operations' sizes
(kernels, strides, the routing matrices, the decoder's widths) off the model's own layers, so
the figure cannot disagree with the code. Change the model and the drawing follows.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..analysis.tracing import ShapeTable, trace_shapes

__all__ = ["architecture_nodes", "plot_architecture"]

TENSOR_COLOUR = "#dbe9f6"  # tensors: light blue boxes
ROUTING_COLOUR = "#fde6c8"  # the routing loop: light orange
OUTPUT_COLOUR = "#d9f0d3"  # what the model returns: light green


def _shape(shape) -> str:
    return str(tuple(shape))


def _describe_conv(module: torch.nn.Module, fallback: str) -> str:
    """``"9x9 conv, stride 1, 256 filters"`` for an ``nn.Conv2d``; ``fallback`` for anything else."""
    if isinstance(module, torch.nn.Conv2d):
        kernel, stride = module.kernel_size, module.stride
        return f"{kernel[0]}x{kernel[1]} conv, stride {stride[0]}, {module.out_channels} filters"
    return fallback


def _describe_decoder(decoder: torch.nn.Module | None) -> str:
    if decoder is None:
        return "no decoder"
    widths = [m.in_features for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    last = [m.out_features for m in decoder.modules() if isinstance(m, torch.nn.Linear)][-1:]
    return "decoder MLP " + " -> ".join(str(w) for w in widths + last)


def architecture_nodes(model: torch.nn.Module, table: ShapeTable) -> list[dict]:
    """The boxes of the drawing, in forward order, as dicts ``name, lines, colour, op``.

    ``lines`` are the text written in the box (the first is the tensor's name, the others its
    shapes, as ``trace_shapes`` reported them); ``op`` labels the arrow INTO the box, which comes
    from the box before, except for the reconstruction's, which comes from the digit capsules.

    Args:
        model: a CapsNet-like model (``conv1``, ``primary_caps``, ``digit_caps``, ``decoder``).
        table: ``trace_shapes(model, x)`` for that model.
    """
    caps = model.primary_caps
    weight_shape = tuple(model.digit_caps.weight.shape)  # (N_in, N_out, D_out, D_in)
    routing = [(stage, shape) for stage, shape, _ in table.rows if stage.startswith("routing ")]
    iterations = len({stage.split(":")[0] for stage, _ in routing})
    first = {stage.split(": ", 1)[1]: shape for stage, shape in routing if stage.startswith("routing 1:")}
    last_v = [shape for stage, shape in routing if stage.endswith("v = squash(s)")][-1]
    nodes = [
        dict(name="input image x", lines=[_shape(table["input"])], colour=TENSOR_COLOUR, op=""),
        dict(
            name="Conv1 features",
            lines=[_shape(table["conv1 + ReLU"])],
            colour=TENSOR_COLOUR,
            op=_describe_conv(model.conv1, "conv1") + " + ReLU",
        ),
        dict(
            name="primary conv output",
            lines=[_shape(table["primary conv"])],
            colour=TENSOR_COLOUR,
            op=_describe_conv(caps.inner, "primary network"),
        ),
        dict(
            name="primary capsules u",
            lines=[_shape(table["primary capsules u"])],
            colour=TENSOR_COLOUR,
            op=f"cut into {caps.num_types} types x grid\ncapsules of {caps.in_dim}, squash",
        ),
        dict(
            name="predictions u_hat",
            lines=[_shape(table["predictions u_hat = W u"])],
            colour=TENSOR_COLOUR,
            op=f"u_hat = W u, one {weight_shape[2]}x{weight_shape[3]} W\nper pair: W {_shape(weight_shape)}",
        ),
        dict(
            name=f"dynamic routing, R = {iterations}",
            lines=[
                f"b, c: {_shape(first['b'])}",
                f"s, v: {_shape(first['s = sum c u_hat'])}",
                "c = softmax over N_out",
            ],
            colour=ROUTING_COLOUR,
            op="routing by agreement",
        ),
        dict(name="digit capsules v", lines=[_shape(last_v)], colour=TENSOR_COLOUR, op=""),
        dict(
            name="lengths |v|",
            lines=[_shape(table["lengths |v|"]), "class scores"],
            colour=OUTPUT_COLOUR,
            op="length of each v",
        ),
    ]
    recon = [shape for stage, shape, _ in table.rows if stage == "reconstructions"]
    if recon:
        nodes.append(
            dict(
                name="reconstruction",
                lines=[_shape(recon[0])],
                colour=OUTPUT_COLOUR,
                op="keep only the winner's v (the longest)\n" + _describe_decoder(getattr(model, "decoder", None)),
            )
        )
    return nodes


def _box(ax, centre, node, width, height) -> None:
    x, y = centre
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=node["colour"],
            edgecolor="0.3",
            linewidth=1.0,
        )
    )
    text = "\n".join([node["name"], *node["lines"]])
    ax.text(x, y, text, ha="center", va="center", fontsize=9.5, family="monospace", linespacing=1.35)


def _arrow(ax, start, end, label, label_at, ha="center") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="0.25", linewidth=1.1))
    if label:
        ax.text(*label_at, label, ha=ha, va="center", fontsize=8.5, color="0.15", style="italic", linespacing=1.2)


def plot_architecture(model: torch.nn.Module | None = None, ax=None, images: torch.Tensor | None = None):
    """Draw CapsNet as boxes (tensors, with their shapes) and arrows (the operations).

    The top row is the encoder up to the prediction vectors; the routing and what the model
    returns follow below, read from right to left. Box texts are the shapes that
    :func:`capslib.trace_shapes` reports for ``images`` through ``model``.

    Args:
        model: a :class:`capslib.CapsNet` (None: a fresh, untrained ``CapsNet()``, whose shapes are
            those of any trained one with the same configuration).
        ax: axes to draw into (None: a new figure).
        images: ``(B, C, H, W)`` to trace (None: one blank image of the model's size, B = 1).

    Returns:
        The figure.
    """
    if model is None:
        from ..model import CapsNet

        model = CapsNet()
    if images is None:
        device = next(model.parameters()).device
        images = torch.zeros(1, *model.image_shape, device=device)  # (1, C, H, W): only the shapes matter
    table = trace_shapes(model, images)
    nodes = architecture_nodes(model, table)
    if ax is None:
        # About 0.85 inch per unit of the layout below both ways, so the 9.5-point text fits its boxes.
        fig, ax = plt.subplots(figsize=(14.5, 6.6))
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9)
    fig = ax.figure

    # Grid places (column, row): the encoder left to right on row 0; routing under the prediction
    # vectors, then right to left on row 1; the reconstruction under the digit capsules it decodes.
    places = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (4, 1), (3, 1), (2, 1), (3, 2)][: len(nodes)]
    sources = [None, 0, 1, 2, 3, 4, 5, 6, 6][: len(nodes)]
    width, gap_x, gap_y = 2.5, 3.3, 2.2
    heights = [0.75 + 0.27 * len(node["lines"]) for node in nodes]
    centres = [(col * gap_x, -row * gap_y) for col, row in places]
    for node, centre, height in zip(nodes, centres, heights, strict=True):
        _box(ax, centre, node, width, height)
    for k, source in enumerate(sources):
        if source is None:
            continue
        (x0, y0), (x1, y1) = centres[source], centres[k]
        if y0 == y1:  # along a row
            sign = 1 if x1 > x0 else -1
            start, end = (x0 + sign * width / 2, y0), (x1 - sign * width / 2, y1)
            _arrow(ax, start, end, nodes[k]["op"], ((x0 + x1) / 2, y0 + 0.75))
        else:  # down a column
            start, end = (x0, y0 - heights[source] / 2), (x1, y1 + heights[k] / 2)
            _arrow(ax, start, end, nodes[k]["op"], (x0 + 0.15, (y0 + y1) / 2 - 0.05), ha="left")
    rows = max(row for _, row in places)
    ax.set_xlim(-width / 2 - 0.2, 4 * gap_x + width / 2 + 0.9)
    ax.set_ylim(-rows * gap_y - 0.9, 1.3)
    ax.axis("off")
    batch = images.shape[0]
    ax.set_title(
        f"CapsNet, every tensor with its shape (batch B = {batch}; shapes from capslib.trace_shapes)\n"
        "read the top row left to right, then the lower rows right to left",
        fontsize=10,
    )
    return fig
