"""capslib.plots.equivariance: pooling, parts and the whole, and the equivariance measurement drawn as
given, on axes that do not move with the slider (any warning is an error, as in test_plots.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from capslib.analysis.equivariance import measure_equivariance  # noqa: E402
from capslib.plots import (  # noqa: E402
    plot_equivariance_curves,
    plot_equivariance_step,
    plot_part_whole,
    plot_pooling_example,
    plot_reconstruction_tracking,
)

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


@pytest.fixture(scope="module")
def results(small_capsnet):
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))  # (3, 1, 28, 28)
    shift = measure_equivariance(small_capsnet, images, "shift", [-1, 0, 1])
    rotate = measure_equivariance(small_capsnet, images, "rotate", [-10, 0, 10])
    return shift, rotate


def test_pooling_example_draws_every_map_on_one_scale():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = maps[1, 1, 2] = 1.0
    pooled = [torch.nn.functional.max_pool2d(maps, 2), maps.amax(dim=(1, 2), keepdim=True)]  # (2, 2, 2), (2, 1, 1)
    fig = plot_pooling_example(maps, pooled, ["a", "b"])
    assert len(fig.axes) == 3 * 2  # a row of maps and a row per pooling, a column per map
    assert {ax.images[0].get_clim() for ax in fig.axes} == {(0.0, 1.0)}
    np.testing.assert_array_equal(np.asarray(fig.axes[1].images[0].get_array()), maps[1].numpy())
    np.testing.assert_array_equal(np.asarray(fig.axes[3].images[0].get_array()), pooled[0][1].numpy())
    assert [t.get_text() for t in fig.axes[4].texts] == ["1"]  # the global max, written in
    assert fig.axes[0].get_title().startswith("a\n") and fig.axes[2].get_title() == "max-pooled 2x2"
    with pytest.raises(ValueError, match="one title per map"):
        plot_pooling_example(maps, pooled, ["a"])


def test_part_whole_titles_the_spread_of_the_predictions():
    outline = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pose = torch.eye(3)
    ax = plot_part_whole({"a": (outline, pose), "b": (outline, pose)}, {"a": pose, "b": pose})
    assert len(ax.patches) == 2 and "spread of predicted positions: 0.00" in ax.get_title()
    moved = pose.clone()
    moved[0, 2] = 2.0  # b predicts the whole 2 to the right: each centre 1 from the mean
    ax = plot_part_whole({"a": (outline, pose), "b": (outline, pose)}, {"a": pose, "b": moved})
    assert "spread of predicted positions: 1.00" in ax.get_title()
    assert ax.get_xlim() == (-3, 3) and ax.get_ylim() == (-3, 3)
    with pytest.raises(ValueError, match="must name the same parts"):
        plot_part_whole({"a": (outline, pose)}, {"b": pose})


def test_equivariance_curves_are_the_mean_changes_on_one_axis(results):
    fig = plot_equivariance_curves(list(results))
    assert len(fig.axes) == 2 and fig.axes[0].get_ylim() == fig.axes[1].get_ylim()
    for ax, result in zip(fig.axes, results, strict=True):
        by_label = {line.get_label(): line for line in ax.lines}
        pose = by_label["winning capsule's pose v_k"]
        np.testing.assert_allclose(pose.get_xdata(), result["amounts"].numpy())
        np.testing.assert_allclose(pose.get_ydata(), result["change_pose"].mean(dim=1).numpy(), rtol=1e-6)
        assert ax.get_xlabel() and ax.get_ylabel() and result["kind"] in ax.get_title()
    assert plot_equivariance_curves(list(results), ylim=2.0).axes[0].get_ylim() == (0.0, 2.0)


def test_reconstruction_tracking_draws_the_median_motion(results):
    fig = plot_reconstruction_tracking(list(results))
    for ax, result in zip(fig.axes, results, strict=True):
        by_label = {line.get_label(): line for line in ax.lines}
        median = np.median(result["reconstruction_motion"].numpy(), axis=1)
        np.testing.assert_allclose(by_label["reconstruction from v_k"].get_ydata(), median, rtol=1e-6)
        np.testing.assert_allclose(by_label["follows exactly"].get_ydata(), result["amounts"].numpy())


def test_step_figure_keeps_its_scales(results):
    shift, _ = results
    limits = []
    for amount in (-1, 0, 1):
        fig = plot_equivariance_step(shift, amount=amount, index=1)
        step = [-1, 0, 1].index(amount)
        np.testing.assert_allclose(np.asarray(fig.axes[1].images[0].get_array()), shift["images"][step, 1, 0].numpy())
        assert {ax.images[0].get_clim() for ax in fig.axes[:4]} == {(0.0, 1.0)}
        limits.append([ax.get_ylim() for ax in fig.axes[4:]])
    assert limits[0] == limits[1] == limits[2], "an axis range moved with the slider"
    with pytest.raises(ValueError, match=r"amount must be one of the measured \[-1.0, 0.0, 1.0\], got 2"):
        plot_equivariance_step(shift, amount=2)
