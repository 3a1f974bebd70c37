"""Kernel-free sliders (capslib.plots.scrubber): one frame per position, the first shown without script,
the rest only inside the script, deterministic, bounded in size, and no figure left open."""

import base64
import io
import math
import re

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from capslib.plots import Scrubber, scrubber  # noqa: E402


def plot_line(slope, offset=0.0):
    """A figure whose picture depends on both arguments."""
    figure, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [offset, offset + slope])
    ax.set_ylim(-3, 3)
    return figure


def draw_on_current(slope):
    """Draws on the current figure and returns nothing, as many notebook functions do."""
    plt.figure(figsize=(3, 2))
    plt.plot([0, 1], [0, slope])


def test_one_frame_per_combination_of_positions_in_row_major_order():
    made = scrubber(plot_line, slope=[-1, 0, 1], offset={"low": -1.0, "high": 1.0})
    assert isinstance(made, Scrubber)
    assert made.names == ["slope", "offset"]
    assert made.labels == [["-1", "0", "1"], ["low", "high"]]
    assert len(made.frames) == 6
    assert len(set(made.frames)) == 6  # every position draws a different picture
    # Row-major: the last slider moves fastest, as the page's script computes the index.
    alone = scrubber(plot_line, slope=[0], offset=[1.0])
    assert made.frames[3] == alone.frames[0]
    assert all(frame.startswith(b"\x89PNG") for frame in made.frames)


def test_without_script_the_first_frame_shows_and_every_frame_is_folded_away_below_it():
    made = scrubber(plot_line, slope=[-1, 0, 1])
    page = made._repr_html_()
    script = re.search(r"<script>(.*?)</script>", page, flags=re.S).group(1)
    outside = page.replace(script, "")
    shown, folded = outside.split("<details", 1)
    encoded = [base64.b64encode(frame).decode() for frame in made.frames]
    assert shown.count("<img ") == 1 and encoded[0] in shown  # the picture a reader without script sees
    assert folded.count("<img ") == 3 and all(folded.count(e) == 1 for e in encoded)  # each frame once, in order
    assert [folded.index(e) for e in encoded] == sorted(folded.index(e) for e in encoded)
    assert "<figcaption" in folded and "slope 1</figcaption>" in folded  # each labelled with its position
    assert not any(e in script for e in encoded)  # the script takes the frames from the page
    # Sliders are disabled until the script enables them, so a reader without script cannot drag a dead one.
    assert outside.count('type="range"') == 1 and "disabled" in outside
    assert "disabled = false" in script and 'style.display = "none"' in script
    assert "http" not in page  # nothing fetched


def test_re_rendering_gives_the_same_output_and_closes_every_figure():
    before = plt.get_fignums()
    first = scrubber(plot_line, slope=[0, 1])
    second = scrubber(draw_on_current, slope=[0, 1])
    assert plt.get_fignums() == before
    assert first.html == scrubber(plot_line, slope=[0, 1]).html  # a re-run notebook commits no diff
    assert len(second.frames) == 2 and second.frames[0] != second.frames[1]


def test_refuses_what_it_cannot_make():
    with pytest.raises(ValueError, match="at least one slider"):
        scrubber(plot_line)
    with pytest.raises(ValueError, match="'slope' needs at least one position"):
        scrubber(plot_line, slope=[])
    with pytest.raises(ValueError, match="list of positions"):
        scrubber(plot_line, slope=3)
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="max_bytes=1,000"):
        scrubber(plot_line, slope=[0, 1, 2], max_bytes=1000)
    assert plt.get_fignums() == before


def test_names_and_start_choose_the_labels_and_the_picture_shown_first():
    made = scrubber(plot_line, names={"slope": "slope (a.u.)"}, start={"slope": 1}, slope=[-1, 0, 1])
    page = re.sub(r"<script>.*?</script>", "", made.html, flags=re.S)
    assert made.names == ["slope (a.u.)"] and made.first_frame == 2
    assert base64.b64encode(made.frames[2]).decode() in page and 'value="2"' in page
    assert "slope (a.u.) 1" in page  # the alt text names the position shown
    with pytest.raises(ValueError, match="not one of its positions"):
        scrubber(plot_line, start={"slope": 5}, slope=[-1, 0, 1])
    with pytest.raises(ValueError, match="only name the sliders"):
        scrubber(plot_line, names={"offset": "x"}, slope=[-1, 0, 1])


def plot_wide_ticks(scale):
    """Tick labels whose width changes with the slider: a tight crop of each frame would differ."""
    figure, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, scale])
    ax.set_title("x" * int(max(1, math.log10(scale))))
    return figure


def test_every_frame_has_one_size_and_the_axes_stay_where_they_are():
    """Frames are aligned on the union of their tight boxes: the y tick labels of 1e6 are wider than
    those of 1, yet the axes' frame (its dark spine pixels) sits at the same columns in every frame."""
    made = scrubber(plot_wide_ticks, scale=[1.0, 1e3, 1e6])
    pictures = [np.asarray(Image.open(io.BytesIO(frame)).convert("L")) for frame in made.frames]
    assert len({picture.shape for picture in pictures}) == 1
    dark_columns = [np.nonzero((picture < 60).sum(axis=0) > picture.shape[0] // 2)[0] for picture in pictures]
    assert all(np.array_equal(columns, dark_columns[0]) for columns in dark_columns)  # the two vertical spines
    assert len(dark_columns[0]) >= 2
