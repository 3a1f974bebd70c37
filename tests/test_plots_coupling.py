"""The coupling figures (capslib.plots.coupling) are honest: one fixed colour scale, white at 1/N_out, the
drawn values are the coupling itself (not stretched), a zoom says so, and the agreement-scaling
exploration is labelled as not the paper's algorithm.

An untrained CapsNet is enough: the tests check what is drawn against what
:mod:`capslib.analysis.interpret` computes, not what a trained model does.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib.analysis import interpret  # noqa: E402
from capslib.analysis.routing_stats import model_prediction_vectors  # noqa: E402
from capslib.plots import coupling_colours, plot_coupling, plot_coupling_spread, plot_coupling_types  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


@pytest.fixture(scope="module")
def model(capsnet):
    return capsnet


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))  # (C, H, W)


def map_images(fig):
    """The coupling maps of a plot_coupling figure: the images drawn with the coupling colormap."""
    return [im for ax in fig.axes for im in ax.images if im.get_cmap().name == "coupling"]


def test_colour_scale_is_white_at_the_uniform_share_and_linear(model):
    cmap, norm, label = coupling_colours(10)
    assert (norm.vmin, norm.vmax) == (0.0, 1.0)
    white = np.array(cmap(norm(0.1)))[:3]
    assert np.allclose(white, 1.0, atol=0.04), white  # RdBu_r's middle is (nearly) white
    # the same step up or down from 1/10 gives mirrored colours: red and blue of the same strength
    up, down = np.array(cmap(norm(0.1 + 0.08)))[:3], np.array(cmap(norm(0.1 - 0.08)))[:3]
    assert abs((1 - up).sum() - (1 - down).sum()) < 0.05, (up, down)
    assert "0 to 1" in label and "1/10" in label
    # a zoom is the same construction on a narrower range
    _, zoom, _ = coupling_colours(10, (0.09, 0.11))
    assert (zoom.vmin, zoom.vmax) == (0.09, 0.11)
    for bad in [(0.1, 0.2), (0.0, 0.05), (0.2, 0.0)]:
        with pytest.raises(ValueError, match="c_range must satisfy low < 1/N_out"):
            coupling_colours(10, bad)


def test_plot_coupling_draws_the_mean_coupling_on_a_fixed_scale(model, image):
    maps = interpret.coupling_maps(model, image, iterations=3)
    predicted = int(maps["lengths"][-1].argmax())
    expected = interpret.mean_coupling(maps, predicted) + 0.1  # (R, H', W'): mean c, not mean c - 1/10
    fig = plot_coupling(model, image, iterations=3)
    drawn = map_images(fig)
    assert len(drawn) == 3
    for r, im in enumerate(drawn):
        assert (im.norm.vmin, im.norm.vmax) == (0.0, 1.0), "the colour range must not follow the data"
        np.testing.assert_allclose(np.asarray(im.get_array()), expected[r].numpy(), atol=1e-6)
    assert "c from 0 to 1" in fig._suptitle.get_text()
    assert "NOT the paper" not in fig._suptitle.get_text()


def test_the_scale_stays_fixed_across_iterations_and_agreement_scales(model, image):
    for iterations, scale in [(1, 1.0), (2, 1.0), (3, 30.0), (10, 1000.0)]:
        fig = plot_coupling(model, image, iterations=iterations, agreement_scale=scale)
        assert {(im.norm.vmin, im.norm.vmax) for im in map_images(fig)} == {(0.0, 1.0)}
        plt.close(fig)


def test_many_iterations_draw_a_few_evenly_spaced_maps(model, image):
    fig = plot_coupling(model, image, iterations=10)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes if any(im in map_images(fig) for im in ax.images)]
    assert titles == ["iteration 1", "iteration 4", "iteration 7", "iteration 10"]
    lengths_panel = fig.axes[5]  # input, 4 maps, then the |v_j| panel (the colour bar comes after)
    assert len(lengths_panel.lines[0].get_xdata()) == 10  # the lengths of every iteration


def test_zoom_and_exploration_are_labelled(model, image):
    zoomed = plot_coupling(model, image, iterations=2, c_range=(0.09, 0.11))
    assert "ZOOMED" in zoomed._suptitle.get_text() and "0.09 to 0.11" in zoomed._suptitle.get_text()
    assert {(im.norm.vmin, im.norm.vmax) for im in map_images(zoomed)} == {(0.09, 0.11)}
    explored = plot_coupling(model, image, iterations=2, agreement_scale=10, title="my title")
    text = explored._suptitle.get_text()
    assert text.startswith("my title") and "agreement x10" in text and "NOT the paper" in text
    types = plot_coupling_types(interpret.coupling_maps(model, image, 2), 3, c_range=(0.05, 0.15))
    assert "ZOOMED" in types._suptitle.get_text()


def test_coupling_types_use_the_full_fixed_range_by_default(model, image):
    maps = interpret.coupling_maps(model, image, iterations=2)
    fig = plot_coupling_types(maps, class_index=3)
    norms = {(im.norm.vmin, im.norm.vmax) for ax in fig.axes for im in ax.images}
    assert norms == {(0.0, 1.0)}
    assert sum(len(ax.images) for ax in fig.axes) == 32


def test_coupling_maps_with_an_agreement_scale_route_the_models_votes(model, image):
    u_hat = model_prediction_vectors(model, image[None])  # (1, N_in, N_out, D_out)
    for scale in (1.0, 7.0):
        trace = capslib.dynamic_routing(u_hat, 3, return_trace=True, agreement_scale=scale).trace
        expected = torch.stack([step.c[0] for step in trace])  # (R, N_in, N_out)
        maps = interpret.coupling_maps(model, image, iterations=3, agreement_scale=scale)
        got = maps["coupling"].permute(0, 2, 3, 4, 1).reshape(3, -1, 10)  # (R, N_in, N_out)
        torch.testing.assert_close(got, expected.cpu())
    flat = interpret.coupling_maps(model, image, iterations=3, agreement_scale=0.0)["coupling"]
    torch.testing.assert_close(flat, torch.full_like(flat, 0.1))  # no agreement: uniform forever
    assert model.routing_iterations == 3 and not model.training
    with pytest.raises(ValueError, match="agreement_scale must be a finite number >= 0"):
        interpret.coupling_maps(model, image, iterations=2, agreement_scale=-1.0)


def test_coupling_spread_and_its_figure(model, image):
    maps = interpret.coupling_maps(model, image, iterations=3, agreement_scale=50.0)
    spread = interpret.coupling_spread(maps)
    assert spread["max_coupling"].shape == spread["entropy"].shape == (3, 1152)  # (R, N_in)
    torch.testing.assert_close(spread["max_coupling"][0], torch.full((1152,), 0.1))  # iteration 1: uniform
    torch.testing.assert_close(spread["entropy"][0], torch.full((1152,), math.log(10)))
    assert bool((spread["max_coupling"] >= 0.1 - 1e-6).all()) and bool((spread["entropy"] <= math.log(10) + 1e-5).all())
    fig = plot_coupling_spread(maps)
    left, right = fig.axes
    assert left.get_yscale() == right.get_yscale() == "log"
    assert left.get_xlim()[0] < 0.1 and left.get_xlim()[1] > 1.0  # the whole range of max c
    assert right.get_xlim()[0] < 0.0 and right.get_xlim()[1] > math.log(10)  # the whole range of the entropy
    assert len(left.patches) == 3  # one histogram per iteration
