"""The MultiMNIST figures draw what they are given, on fixed scales: the coupling colour range is
the same for every iteration and pair (a small change looks small), a zoom says so, Figure 5 puts
each reconstruction in its own colour channel and marks the wrong pairs.

Synthetic tensors are enough: the tests check what is drawn against what is passed in.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from capslib.plots import multimnist as pm  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


@pytest.fixture
def pair():
    """A synthetic pair: a bar (A) and a column (B) crossing on a 36x36 canvas."""
    first = torch.zeros(1, 36, 36)
    first[0, 10:14, 6:30] = 1.0
    second = torch.zeros(1, 36, 36)
    second[0, 6:30, 16:20] = 0.8
    return (first + second).clamp(0, 1), first, second, torch.tensor([7, 2])


def grid_images(fig):
    """The coupling maps of a figure: images drawn with the coupling-difference colour map."""
    return [im for ax in fig.axes for im in ax.images if im.get_cmap().name == "b_white_a"]


def test_coupling_colour_scale_is_fixed_across_iterations_and_pairs(pair):
    image, _, _, labels = pair
    small = torch.zeros(3, 10, 10)
    small[1:, 4, 4] = 0.01  # a small change
    large = torch.linspace(-0.9, 0.9, 300).view(3, 10, 10)
    limits, extents = set(), set()
    for difference in (small, large):
        fig = pm.plot_pair_coupling(image, difference, labels)
        maps = grid_images(fig)
        assert len(maps) == 3  # one panel per iteration
        for r, im in enumerate(maps):
            limits.add(im.get_clim())
            extents.add(tuple(im.get_extent()))
            np.testing.assert_array_equal(np.asarray(im.get_array()), difference[r].numpy())  # drawn as given
        assert "fixed colour range -1 .. 1" in fig._suptitle.get_text()
    assert limits == {(-1.0, 1.0)}, "the colour range must not follow the data"
    assert extents == {(7.0, 27.0, 27.0, 7.0)}, "the 10x10 grid sits at the receptive-field centres, pixels 8..26"


def test_a_small_change_looks_small_and_a_zoom_says_so(pair):
    cmap, norm, label = pm.difference_colours()
    white = np.asarray(cmap(norm(0.0)))[:3]
    np.testing.assert_allclose(white, 1.0, atol=1e-6)
    small = np.asarray(cmap(norm(0.01)))[:3]
    assert np.abs(small - white).max() < 0.02, small  # 1% of the range is 1% of the colour
    assert np.abs(np.asarray(cmap(norm(1.0)))[:3] - white).max() > 0.5  # full A is strongly coloured
    up, down = np.asarray(cmap(norm(0.5)))[:3], np.asarray(cmap(norm(-0.5)))[:3]
    assert abs((1 - up).sum() - (1 - down).sum()) < 0.15, (up, down)  # symmetric strength for A and B
    assert "-1 .. 1" in label and "ZOOMED" not in label
    image, _, _, labels = pair
    fig = pm.plot_pair_coupling(image, torch.zeros(2, 10, 10), labels, limit=0.2)
    assert {im.get_clim() for im in grid_images(fig)} == {(-0.2, 0.2)}
    assert "ZOOMED" in fig._suptitle.get_text()
    for bad in (0, 1.5, "1"):
        with pytest.raises(ValueError, match="limit"):
            pm.difference_colours(bad)


def test_coupling_figure_checks_its_inputs(pair):
    image, _, _, labels = pair
    with pytest.raises(ValueError, match=r"\(R, H', W'\)"):
        pm.plot_pair_coupling(image, torch.zeros(10, 10), labels)
    with pytest.raises(ValueError, match="max_iterations"):
        pm.plot_pair_coupling(image, torch.zeros(3, 10, 10), labels, max_iterations=2)
    with pytest.raises(ValueError, match=r"lengths must be \(R, N_out\)"):
        pm.plot_pair_coupling(image, torch.zeros(3, 10, 10), labels, lengths=torch.zeros(2, 10))
    with pytest.raises(ValueError, match="two digits"):
        pm.plot_coupling_difference(image, torch.zeros(10, 10), torch.tensor([1, 2, 3]))


def test_lengths_panel_keeps_its_axes_while_the_iterations_change(pair):
    image, _, _, labels = pair
    axes = []
    for r in (1, 4):
        fig = pm.plot_pair_coupling(image, torch.zeros(r, 10, 10), labels, torch.rand(r, 10), max_iterations=5)
        axes.append((fig.axes[-2].get_xlim(), fig.axes[-2].get_ylim()))  # the last is the colour bar
    assert axes[0] == axes[1] == ((0.5, 5.5), (0.0, 1.0))


def test_overlay_puts_each_digit_in_its_channel(pair):
    image, first, second, _ = pair
    rgb = pm.overlay(image, first, second, grey=0.45)
    assert rgb.shape == (36, 36, 3)
    np.testing.assert_allclose(rgb[..., 0], np.clip(0.45 * image[0].numpy() + first[0].numpy(), 0, 1), atol=1e-6)
    np.testing.assert_allclose(rgb[..., 1], np.clip(0.45 * image[0].numpy() + second[0].numpy(), 0, 1), atol=1e-6)
    np.testing.assert_allclose(rgb[..., 2], 0.45 * image[0].numpy(), atol=1e-6)
    assert rgb[12, 17, 0] == 1.0 and rgb[12, 17, 1] == 1.0  # where they cross: yellow


def test_figure5_titles_and_marks_the_wrong_pairs(pair):
    image, first, second, _ = pair
    images = torch.stack([image, image, image])  # (3, 1, 36, 36)
    reconstructions = torch.stack([torch.stack([first, second])] * 3)  # (3, 2, 1, 36, 36)
    labels = torch.tensor([[7, 2], [7, 2], [7, 2]])
    predicted = torch.tensor([[7, 2], [7, 3], [2, 7]])
    fig = pm.plot_figure5(images, reconstructions, labels, predicted, ncols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["L:(7,2) R:(7,2)", "L:(7,2) R:(7,3)\nWRONG", "L:(7,2) R:(2,7)"]
    assert "1 of 3 wrong" in fig._suptitle.get_text()
    overlays = [ax.images[0].get_array() for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 3]
    assert len(overlays) == 3
    np.testing.assert_allclose(overlays[0], pm.overlay(image, first, second))
    with pytest.raises(ValueError, match="equally long"):
        pm.plot_figure5(images, reconstructions[:2], labels, predicted)


def test_made_pair_draws_the_lengths_on_a_fixed_axis(pair):
    image, first, second, labels = pair
    lengths = torch.tensor([0.1, 0.0, 0.8, 0.05, 0.3, 0.0, 0.0, 0.9, 0.2, 0.1])
    fig = pm.plot_made_pair(image, first, second, labels, lengths)
    bars = fig.axes[2].patches
    np.testing.assert_allclose([bar.get_height() for bar in bars], lengths.numpy(), atol=1e-7)
    assert fig.axes[2].get_ylim() == (0.0, 1.0)
    assert "7 and 2: both right" in fig.axes[2].get_title()
    lengths[4] = 0.95  # now 4 and 7 are the longest
    assert "NOT both right" in pm.plot_made_pair(image, first, second, labels, lengths).axes[2].get_title()


def test_iteration_study_plots_the_errors_it_is_given():
    record = {
        "name": "m",
        "test_pairs": 200,
        "results": [
            {"iterations": 3, "both_right": 0.9, "at_least_one_right": 0.99, "separation": 0.02},
            {"iterations": 1, "both_right": 0.8, "at_least_one_right": 0.98, "separation": 0.0},
        ],
    }
    fig = pm.plot_iteration_study(record, references=[("paper", 3, 5.2)])
    both, one, paper = fig.axes[0].lines[:3]
    np.testing.assert_allclose(both.get_ydata(), [20.0, 10.0])  # sorted by iterations: 1, 3
    np.testing.assert_allclose(one.get_ydata(), [2.0, 1.0])
    assert list(paper.get_xdata()) == [3] and list(paper.get_ydata()) == [5.2]
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.0, 0.02])


def test_separation_noise_looks_flat():
    rows = [{"iterations": r, "both_right": 0.5, "at_least_one_right": 0.9, "separation": 1e-9 * r} for r in (1, 2)]
    fig = pm.plot_iteration_study({"name": "m", "test_pairs": 10, "results": rows})
    assert fig.axes[1].get_ylim() == (-0.05, 0.05)  # not stretched to 1e-9
    rows[1]["separation"] = 0.5
    assert fig.axes[1].get_ylim() != pm.plot_iteration_study({"test_pairs": 10, "results": rows}).axes[1].get_ylim()
