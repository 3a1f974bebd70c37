"""Sliders that work without a kernel: a plot's frames rendered at each slider position, switched in HTML.

A live ipywidgets slider (:func:`capslib.plots.widgets.interactive_plot`) needs a running kernel:
on GitHub, in a static site or in a notebook nobody has run, it shows only ``VBox(...)``. A
:class:`Scrubber` renders the same plot once per position when the cell runs and keeps the
pictures in the notebook, so a reader can scrub through them with nothing installed::

    interactive_plot(partial(plot_lab, cluster_size=6), iteration=IntSlider(3, min=1, max=3))  # live
    scrubber(partial(plot_lab, cluster_size=6), iteration=[1, 2, 3])                           # kernel-free

Where it moves: wherever a notebook's HTML outputs may run their script (the static site that
``python -m capslib.site`` builds, VS Code, JupyterLab once the cell has run or the notebook is
trusted). Where scripts are stripped (GitHub, an untrusted notebook) the first frame shows as a
plain picture with its caption and a disabled slider, and every frame, labelled, is folded away
under it in a ``<details>`` element (which needs no script) for the reader who wants them all.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence

__all__ = ["Scrubber", "scrubber", "MAX_SCRUBBER_BYTES"]

MAX_SCRUBBER_BYTES = 1_000_000
"""The largest scrubber :func:`scrubber` makes: about 1 MB keeps a committed notebook light."""

_SCRIPT = """
(function () {
  var root = document.currentScript ? document.currentScript.parentNode : document.getElementById("%(id)s");
  var labels = %(labels)s, names = %(names)s;
  var every = root.querySelector(".capslib-scrubber-frames");
  var frames = Array.prototype.map.call(every.querySelectorAll("img"), function (img) { return img.src; });
  every.style.display = "none";  // the slider shows them now
  var inputs = root.querySelectorAll("input[type=range]");
  var shown = root.querySelectorAll(".capslib-scrubber-value");
  var image = root.querySelector("img");
  function show() {
    var index = 0;
    for (var k = 0; k < inputs.length; k++) {
      index = index * labels[k].length + Number(inputs[k].value);
      shown[k].textContent = labels[k][Number(inputs[k].value)];
    }
    image.src = frames[index];
    image.alt = image.alt.split(":")[0] + ": " + names.map(
      function (name, k) { return name + " " + labels[k][Number(inputs[k].value)]; }).join(", ");
  }
  for (var k = 0; k < inputs.length; k++) { inputs[k].disabled = false; inputs[k].addEventListener("input", show); }
})();
"""


class Scrubber:
    """Frames of one plot over a grid of slider positions, shown as HTML with range inputs.

    Attributes:
        names: the slider names, in order.
        labels: per slider, the label of each position (what the reader sees beside it).
        frames: PNG bytes per position, in row-major order (the last slider moves fastest).
        caption: the line under the picture.
    """

    def __init__(
        self,
        names: list[str],
        labels: list[list[str]],
        frames: list[bytes],
        caption: str,
        title: str,
        start: list[int] | None = None,
    ):
        self.names, self.labels, self.frames, self.caption, self.title = names, labels, frames, caption, title
        self.start = start or [0] * len(names)  # the position shown first, per slider
        self.html = self._render()

    @property
    def first_frame(self) -> int:
        """Index into :attr:`frames` of the picture shown first (row-major, as the page computes it)."""
        index = 0
        for position, labels in zip(self.start, self.labels, strict=True):
            index = index * len(labels) + position
        return index

    def _render(self) -> str:
        encoded = [base64.b64encode(frame).decode("ascii") for frame in self.frames]
        # The id is a digest of the content: re-running a notebook writes the same output.
        ident = "capslib-scrubber-" + hashlib.sha256("".join(encoded).encode()).hexdigest()[:12]
        axes = list(zip(self.names, self.labels, self.start, strict=True))
        sliders = "".join(
            f'<label style="margin-right:1.5em">{html.escape(name)} '
            f'<input type="range" min="0" max="{len(labels) - 1}" step="1" value="{at}" '
            f'aria-label="{html.escape(name)}" style="vertical-align:middle" disabled> '
            f'<span class="capslib-scrubber-value">{html.escape(labels[at])}</span></label>'
            for name, labels, at in axes
        )
        first = ", ".join(f"{name} {labels[at]}" for name, labels, at in axes)
        script = _SCRIPT % {"id": ident, "labels": json.dumps(self.labels), "names": json.dumps(self.names)}
        # Every frame once more, folded away: where no script runs (GitHub, an untrusted notebook) a
        # reader can still open them all; where it runs, the script takes them for the slider.
        positions = [", ".join(f"{n} {label}" for n, label in zip(self.names, combo, strict=True))
                     for combo in itertools.product(*self.labels)]  # fmt: skip
        every = "".join(
            '<figure style="display:inline-block;margin:0.3em;vertical-align:top">'
            f'<img src="data:image/png;base64,{frame}" alt="{html.escape(self.title)}: {html.escape(where)}" '
            'style="max-width:100%">'
            f'<figcaption style="font-size:smaller">{html.escape(where)}</figcaption></figure>'
            for frame, where in zip(encoded, positions, strict=True)
        )
        return (
            f'<div class="capslib-scrubber" id="{ident}">'
            f'<div style="margin:0.3em 0">{sliders}</div>'
            f'<img src="data:image/png;base64,{encoded[self.first_frame]}" '
            f'alt="{html.escape(self.title)}: {html.escape(first)}" '
            'style="display:block;max-width:100%">'
            f'<div style="font-size:smaller;color:#555">{html.escape(self.caption)}</div>'
            '<details class="capslib-scrubber-frames"><summary style="font-size:smaller;cursor:pointer">'
            f"Every frame, {len(encoded)} pictures (for where the slider cannot move)</summary>{every}</details>"
            f"<script>{script}</script></div>"
        )

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        grid = " x ".join(f"{len(labels)} {name}" for name, labels in zip(self.names, self.labels, strict=True))
        return f"Scrubber({self.title!r}: {grid} = {len(self.frames)} frames, {len(self.html):,} bytes)"


def _positions(name: str, values) -> tuple[list[str], list]:
    """``(labels, values)`` of one slider: a mapping gives its labels, a sequence is labelled by its values."""
    if isinstance(values, Mapping):
        labels, chosen = [str(k) for k in values], list(values.values())
    elif isinstance(values, Sequence) and not isinstance(values, str):
        labels, chosen = [f"{v:g}" if isinstance(v, float) else str(v) for v in values], list(values)
    else:
        raise ValueError(f"slider {name!r} needs a list of positions or a {{label: value}} dict, got {values!r}")
    if not chosen:
        raise ValueError(f"slider {name!r} needs at least one position, got none")
    return labels, chosen


def _render(figure, dpi: int):
    """``(picture, box)``: the figure's tight picture (an RGB ``PIL.Image``, as the notebook's inline
    figures are cropped: nothing cut off at the edges) and the box it shows, in inches from the
    figure's lower-left corner."""
    from matplotlib.transforms import Affine2D, Bbox
    from PIL import Image

    figure.canvas.draw()
    # The box bbox_inches="tight" would crop to (its default pad, 0.1 inch), computed here so the
    # frames of one scrubber can be aligned on the union of their boxes afterwards.
    box = figure.get_tightbbox(figure.canvas.get_renderer()).padded(0.1)
    # Snapped outward to whole pixels, so two frames' drawings land on the same pixel grid.
    (x0, y0), (x1, y1) = box.get_points() * dpi
    box = Bbox([[math.floor(x0), math.floor(y0)], [math.ceil(x1), math.ceil(y1)]]).transformed(
        Affine2D().scale(1 / dpi)
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches=box, metadata={"Software": None})
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), box


def _aligned(picture, box, union, dpi: int):
    """``picture`` (showing ``box``) placed where ``box`` lies in ``union``, on white: every frame of
    a scrubber the same size, its axes where the others have them, so the slider never shifts them."""
    from PIL import Image

    width, height = round(union.width * dpi), round(union.height * dpi)
    left, top = round((box.x0 - union.x0) * dpi), round((union.y1 - box.y1) * dpi)
    if (width, height, left, top) == (*picture.size, 0, 0):
        return picture
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(picture, (left, top))
    return canvas


def _png(picture) -> bytes:
    """An RGB picture as a 256-colour PNG (a third of the full-colour size for plots), deterministic bytes."""
    out = io.BytesIO()
    picture.quantize(colors=256).save(out, format="PNG", optimize=True)
    return out.getvalue()


def scrubber(
    plot_fn: Callable,
    *,
    caption: str | None = None,
    title: str | None = None,
    names: Mapping[str, str] | None = None,
    start: Mapping[str, object] | None = None,
    dpi: int = 72,
    max_bytes: int = MAX_SCRUBBER_BYTES,
    **sliders: Sequence | Mapping,
) -> Scrubber:
    """Render ``plot_fn`` at every combination of the sliders' positions: a kernel-free slider.

    Args:
        plot_fn: draws one matplotlib figure from its keyword arguments (constants bound, e.g. with
            ``functools.partial``), returning the figure or leaving it current.
        caption: the line under the picture (default: how many frames, and where they move).
        title: names the picture in its alt text (default: the function's name).
        names: what a slider is called on the page, by keyword (default: the keyword itself).
        start: the position shown first, by keyword (default: each slider's first position).
        dpi: resolution of the frames (72 keeps a frame of a wide figure near 30 kB).
        max_bytes: refuse to make a scrubber larger than this (default :data:`MAX_SCRUBBER_BYTES`).
        sliders: per keyword of ``plot_fn``, its positions: a list of values, or ``{label: value}``.
            The first position of each is shown first unless ``start`` says otherwise.

    Returns:
        A :class:`Scrubber`; the last expression of a cell, it shows as HTML.

    Raises:
        ValueError: no sliders, a slider without positions, a ``names`` or ``start`` entry for no
            slider or a start that is not a position, or more than ``max_bytes`` of frames (nothing
            is shown; use fewer positions or a lower ``dpi``).
    """
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    if not sliders:
        raise ValueError("scrubber needs at least one slider, e.g. iteration=[1, 2, 3]; got none")
    keywords = list(sliders)
    grid = [_positions(name, values) for name, values in sliders.items()]
    names, start = dict(names or {}), dict(start or {})
    unknown = sorted((set(names) | set(start)) - set(keywords))
    if unknown:
        raise ValueError(f"names and start may only name the sliders {keywords}, got {unknown}")
    first = []
    for keyword, (_, chosen) in zip(keywords, grid, strict=True):
        if keyword in start and start[keyword] not in chosen:
            raise ValueError(f"start {keyword}={start[keyword]!r} is not one of its positions {chosen}")
        first.append(chosen.index(start[keyword]) if keyword in start else 0)
    inner = getattr(plot_fn, "func", plot_fn)
    title = title or getattr(inner, "__name__", "plot")
    pictures, boxes, frames, size = [], [], [], 0
    was_interactive = plt.isinteractive()
    plt.ioff()  # frames are rendered, not shown
    try:
        for values in itertools.product(*(chosen for _, chosen in grid)):
            before = set(plt.get_fignums())
            returned = plot_fn(**dict(zip(keywords, values, strict=True)))
            figure = returned if hasattr(returned, "savefig") else plt.gcf()
            picture, box = _render(figure, dpi)
            pictures.append(picture)
            boxes.append(box)
            frames.append(_png(picture))  # as drawn; re-encoded below if alignment pads it
            for number in set(plt.get_fignums()) - before:
                plt.close(number)
            plt.close(figure)
            size += len(frames[-1]) * 4 // 3
            if size > max_bytes:
                raise ValueError(
                    f"scrubber {title!r}: {len(frames)} of {_count(grid)} frames already take {size:,} bytes, "
                    f"more than max_bytes={max_bytes:,}; use fewer positions or a lower dpi (got {dpi})"
                )
    finally:
        if was_interactive:
            plt.ion()
    # Tick labels and titles change width from frame to frame, so each tight crop differs a little:
    # placed on the union of the boxes, every frame has one size and the axes stay put as the slider moves.
    union = Bbox.union(boxes)
    for k, (picture, box) in enumerate(zip(pictures, boxes, strict=True)):
        placed = _aligned(picture, box, union, dpi)
        if placed is not picture:
            frames[k] = _png(placed)
    if caption is None:
        caption = (
            f"{len(frames)} precomputed frames. The slider moves on the series' static site, in VS Code, and "
            "in JupyterLab once this cell has run; elsewhere, open every frame below."
        )
    shown = [names.get(keyword, keyword) for keyword in keywords]
    made = Scrubber(shown, [labels for labels, _ in grid], frames, caption, title, start=first)
    if len(made.html) > max_bytes:  # the frames, the one shown first once more, and the page around them
        raise ValueError(
            f"scrubber {title!r}: {len(frames)} frames take {len(made.html):,} bytes, more than "
            f"max_bytes={max_bytes:,}; use fewer positions or a lower dpi (got {dpi})"
        )
    return made


def _count(grid) -> int:
    """How many frames ``grid`` (a list of ``(labels, values)`` per slider) makes: every combination."""
    return math.prod(len(labels) for labels, _ in grid)
