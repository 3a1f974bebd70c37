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
    assert "-1 .. 1" in label and "full range" in label and "ZOOMED" not in label
    image, _, _, labels = pair
    fig = pm.plot_pair_coupling(image, torch.zeros(2, 10, 10), labels, limit=0.2)
    assert {im.get_clim() for im in grid_images(fig)} == {(-0.2, 0.2)}
    assert "ZOOMED 5x" in fig._suptitle.get_text() and "the full range is -1 .. 1" in fig._suptitle.get_text()
    assert "ZOOMED 5x; full: -1 .. 1" in pm.difference_colours(0.2)[2]
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


def test_overlay_draws_each_digit_as_ink_on_white(pair):
    image, first, second, _ = pair
    rgb = pm.overlay(image, first, second, grey=0.3)
    assert rgb.shape == (36, 36, 3)
    x, a, b = image[0].numpy(), first[0].numpy(), second[0].numpy()
    np.testing.assert_allclose(rgb[..., 0], 1 - np.clip(0.3 * x + b, 0, 1), atol=1e-6)  # green ink takes red
    np.testing.assert_allclose(rgb[..., 1], 1 - np.clip(0.3 * x + a, 0, 1), atol=1e-6)  # red ink takes green
    np.testing.assert_allclose(rgb[..., 2], 1 - np.clip(0.3 * x + a + b, 0, 1), atol=1e-6)
    blank = pm.overlay(torch.zeros_like(image), torch.zeros_like(first), torch.zeros_like(second))
    np.testing.assert_allclose(blank, 1.0)  # no ink: white paper
    np.testing.assert_allclose(rgb[12, 17], 0.0, atol=1e-6)  # where they cross: black


def test_fitted_limit_fits_the_values_with_a_round_number():
    assert pm.fitted_limit(torch.tensor([-0.0145, 0.0045])) == 0.02
    assert pm.fitted_limit([torch.tensor([0.003]), np.array([[-0.004]])]) == 0.005
    assert pm.fitted_limit(torch.tensor([0.2, -0.1])) == 0.2
    assert pm.fitted_limit(torch.tensor([0.7])) == 1.0 and pm.fitted_limit(torch.zeros(3)) == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        pm.fitted_limit(torch.zeros(0))


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


def test_iteration_study_plots_the_errors_it_is_given_with_their_error_bars():
    record = {
        "name": "m",
        "test_pairs": 200,
        "results": [
            {"iterations": 3, "both_right": 0.9, "at_least_one_right": 0.99, "separation": 0.02},
            {"iterations": 1, "both_right": 0.8, "at_least_one_right": 0.98, "separation": 0.0},
        ],
    }
    fig = pm.plot_iteration_study(record, references=[("paper", 3, 5.2)])
    both = fig.axes[0].containers[0].lines[0]  # the error curve drawn with its error bars
    one, paper = (next(line for line in fig.axes[0].lines if line.get_marker() == m) for m in ("s", "*"))
    np.testing.assert_allclose(np.asarray(both.get_ydata(), dtype=float), [20.0, 10.0])  # sorted by iterations: 1, 3
    np.testing.assert_allclose(one.get_ydata(), [2.0, 1.0])
    assert list(paper.get_xdata()) == [3] and list(paper.get_ydata()) == [5.2]
    bars = fig.axes[0].containers[0].lines[2][0].get_segments()  # the vertical error bars, iterations 1, 3
    se = [100 * np.sqrt(0.8 * 0.2 / 200), 100 * np.sqrt(0.9 * 0.1 / 200)]  # binomial standard errors
    np.testing.assert_allclose([seg[:, 1] for seg in bars], [[20 - se[0], 20 + se[0]], [10 - se[1], 10 + se[1]]])
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.0, 0.02])


def test_separation_is_drawn_on_its_full_scale():
    rows = [{"iterations": r, "both_right": 0.5, "at_least_one_right": 0.9, "separation": 0.003 * r} for r in (1, 2)]
    fig = pm.plot_iteration_study({"name": "m", "test_pairs": 10, "results": rows})
    low, high = fig.axes[1].get_ylim()
    assert low <= 0 and high >= 1  # complete separation (1) is on the axis: thousandths look small
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in fig.axes[1].lines)  # and marked
    assert "full scale" in fig.axes[1].get_title()
    rows[1]["separation"] = -0.5  # a negative separation extends the axis to -1
    assert pm.plot_iteration_study({"test_pairs": 10, "results": rows}).axes[1].get_ylim()[0] == -1.0
