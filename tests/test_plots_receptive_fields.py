"""plot_receptive_fields draws each chosen grid position's receptive field where it is, whole.

A field at grid (0, 0) starts at the image's first pixel: drawn flush with the axes it would show
only its right and bottom edges (two lines that read as crosshairs). The axes must leave room for
all four edges, and each box must sit on the pixels that receptive_fields names.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from capslib.analysis.interpret import receptive_fields  # noqa: E402
from capslib.plots import plot_receptive_fields  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


def outlines(fig):
    """The outlined (unfilled) rectangles of the figure's first axes, as (left, top, right, bottom)."""
    found = []
    for patch in fig.axes[0].patches:
        if isinstance(patch, Rectangle) and not patch.get_fill():
            x, y = patch.get_xy()
            found.append((x, y, x + patch.get_width(), y + patch.get_height()))
    return found


def test_each_box_covers_the_pixels_of_its_field():
    image = torch.rand(1, 28, 28)  # (C, H, W)
    fig = plot_receptive_fields(image, [(0, 0), (5, 2)])
    boxes = receptive_fields((6, 6))  # (6, 6, 4): top, left, bottom, right
    expected = []
    for row, col in [(0, 0), (5, 2)]:
        top, left, bottom, right = boxes[row, col].tolist()
        expected.append((left - 0.5, top - 0.5, right + 0.5, bottom + 0.5))
    assert outlines(fig) == expected
    assert expected[1] == (3.5, 9.5, 20.5, 26.5)  # grid (5, 2): pixels x 4..20, y 10..26


def test_a_field_at_the_border_shows_all_four_edges():
    fig = plot_receptive_fields(torch.rand(28, 28), [(0, 0)])
    ax = fig.axes[0]
    left, top, right, bottom = outlines(fig)[0]
    x_low, x_high = sorted(ax.get_xlim())
    y_low, y_high = sorted(ax.get_ylim())
    assert x_low < left and right < x_high, "the left or right edge lies on the axes' border"
    assert y_low < top and bottom < y_high, "the top or bottom edge lies on the axes' border"
    assert ax.get_ylim()[0] > ax.get_ylim()[1], "image rows must grow downwards"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="row"):
        plot_receptive_fields(torch.rand(1, 28, 28), [(6, 0)])
    with pytest.raises(ValueError, match="at least one"):
        plot_receptive_fields(torch.rand(1, 28, 28), [])
    with pytest.raises(ValueError, match="image must be"):
        plot_receptive_fields(torch.rand(1, 1, 28, 28), [(0, 0)])
    with pytest.raises(ValueError, match="one label per position"):
        plot_receptive_fields(torch.rand(28, 28), [(0, 0)], labels=["a", "b"])
