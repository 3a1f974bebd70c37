"""The lessons added to notebooks 00 and 02 for issue 22: the linear read-out of a shift
(capslib.analysis.readout), the decoder as a renderer and the house/boat votes
(capslib.plots.inverse_graphics), and the primary capsules' saturation (plot_length_saturation).
Any warning is an error, as in test_plots.py."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from capslib.analysis.interpret import decode_pose  # noqa: E402
from capslib.analysis.readout import linear_readout  # noqa: E402
from capslib.plots import plot_length_saturation, plot_part_votes, plot_pose_offset, plot_pose_sweep  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


def test_linear_readout_finds_an_encoded_amount_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    amounts = torch.arange(-3, 4, dtype=torch.float32)  # (7,)
    reference = torch.randn(40, 5, generator=generator)  # (B, F)
    direction = torch.randn(5, generator=generator)  # the amount is written along this direction
    encoded = reference + amounts.view(-1, 1, 1) * direction  # (7, 40, 5): change = amount * direction
    assert linear_readout(encoded, reference, amounts) == pytest.approx(1.0, abs=1e-6)
    noise = reference + torch.randn(7, 40, 5, generator=generator)  # changes that say nothing of the amount
    assert linear_readout(noise, reference, amounts) < 0.2
    # max_amount keeps only the small amounts: an encoding that breaks beyond 1 still reads perfectly within it
    broken = encoded.clone()
    broken[amounts.abs() > 1] = reference + torch.randn(4, 40, 5, generator=generator)
    assert linear_readout(broken, reference, amounts, max_amount=1) == pytest.approx(1.0, abs=1e-6)
    assert linear_readout(broken, reference, amounts) < 0.9


def test_linear_readout_rejects_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        linear_readout(torch.zeros(3, 4), torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="one amount per row"):
        linear_readout(torch.zeros(3, 4, 2), torch.zeros(4, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="2 amounts"):
        linear_readout(torch.zeros(3, 4, 2), torch.zeros(4, 2), torch.tensor([0.0, 5.0, 6.0]), max_amount=1)


def test_pose_sweep_decodes_each_offset_of_each_dimension(small_capsnet):
    pose = torch.linspace(-0.3, 0.3, 16)
    fig = plot_pose_sweep(small_capsnet, pose, 3, dimensions=[2, 5], offsets=[-0.2, 0.0, 0.2])
    assert len(fig.axes) == 2 * 3
    moved = pose.clone()
    moved[5] += 0.2
    expected = decode_pose(small_capsnet, moved, 3)[0, 0]  # (H, W)
    np.testing.assert_allclose(np.asarray(fig.axes[5].images[0].get_array()), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert {ax.images[0].get_clim() for ax in fig.axes} == {(0.0, 1.0)}
    assert fig.axes[3].get_ylabel() == "dim 5"
    with pytest.raises(ValueError, match="at least one"):
        plot_pose_sweep(small_capsnet, pose, 3, dimensions=[], offsets=[0.1])


def test_pose_offset_keeps_its_scales_for_every_offset(small_capsnet):
    pose = torch.linspace(-0.3, 0.3, 16)
    limits = []
    for offset in (-0.25, 0.0, 0.25):
        fig = plot_pose_offset(small_capsnet, pose, 1, dimension=4, offset=offset)
        limits.append((fig.axes[2].images[0].get_clim(), fig.axes[3].get_ylim()))
        heights = [bar.get_height() for bar in fig.axes[3].patches]
        assert heights[16 + 4] == pytest.approx(float(pose[4]) + offset, abs=1e-6)  # the moved pose's bar
    assert len(set(limits)) == 1 and limits[0][0] == (-1.0, 1.0)
    with pytest.raises(ValueError, match="offset"):
        plot_pose_offset(small_capsnet, pose, 1, dimension=4, offset=0.5)
    with pytest.raises(ValueError, match="dimension"):
        plot_pose_offset(small_capsnet, pose, 1, dimension=16, offset=0.1)


def _pose2d(x, y, degrees):
    a = np.deg2rad(degrees)
    return torch.tensor([[np.cos(a), -np.sin(a), x], [np.sin(a), np.cos(a), y], [0.0, 0.0, 1.0]], dtype=torch.float32)


def test_part_votes_say_which_whole_agrees():
    square = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    parts = {"a": (square, _pose2d(0, 0, 0)), "b": (square, _pose2d(1, 0, 0))}
    agree = {"a": _pose2d(0.5, 1, 0), "b": _pose2d(0.5, 1, 0)}
    turned = {"a": _pose2d(0.5, 1, 0), "b": _pose2d(0.5, 1, 90)}  # same place, turned: still a disagreement
    ax = plot_part_votes(parts, {"house": agree, "boat": turned}, wholes={"boat": [square]}, title="t")
    assert "house 0.00" in ax.get_title()
    turn = float(ax.get_title().split("boat ")[1])
    assert turn == pytest.approx(np.sqrt(2) / 2 * 2 / 3, abs=0.01)  # x and y tips 0.71 apart each, origin 0
    assert len(ax.patches) == 2 + 2  # the two parts and the boat's outline at each of its two votes
    assert ax.get_xlim() == (-3.0, 3.0)
    with pytest.raises(ValueError, match="must name the parts"):
        plot_part_votes(parts, {"house": {"a": agree["a"]}})
    with pytest.raises(ValueError, match="wholes must name"):
        plot_part_votes(parts, {"house": agree}, wholes={"boat": [square]})


def test_length_saturation_draws_shares_on_the_whole_length_range():
    norms = {"small": torch.tensor([0.1, 0.2, 0.3]), "large": torch.tensor([10.0, 20.0, 30.0, 40.0])}
    fig = plot_length_saturation(norms, bins=10)
    ax_s, ax_v, curve = fig.axes
    assert ax_v.get_xlim() == (0.0, 1.0) and ax_s.get_xscale() == "log" and curve.get_ylim() == (0.0, 1.02)
    for ax in (ax_s, ax_v):
        for patch in ax.patches:  # a step histogram per group, its heights summing to 1
            heights = patch.get_path().vertices[:, 1]
            assert heights.max() <= 1.0
    last_bin = ax_v.patches[1].get_path().vertices  # the large group's lengths are all above 0.99
    assert last_bin[:, 1].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one"):
        plot_length_saturation({})
    with pytest.raises(ValueError, match="non-negative"):
        plot_length_saturation({"x": torch.tensor([-1.0])})
