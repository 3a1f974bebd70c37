"""The figures of capslib.plots draw the data they are given, titled and labelled, on scales that do
not follow the data where a slider moves it; capslib.analysis.interpret returns tensors of the
documented shapes and leaves the model as it found it.

A notebook kernel hides warnings; here any warning (e.g. a deprecated way of handing tensors to
matplotlib) is an error.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib import plots  # noqa: E402
from capslib.analysis import interpret  # noqa: E402
from capslib.plots.common import colourbar_extend, image2d  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # (B, 1, 28, 28)


def drawn(ax, k: int = 0) -> np.ndarray:
    return np.asarray(ax.images[k].get_array())


def panels(fig):
    """The axes of a figure that show an image (colour bars and switched-off panels left out)."""
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_the_package_offers_every_plotting_function_of_its_modules():
    """A plot function added to a module is reachable as ``capslib.plots.<name>`` for the notebooks."""
    folder = Path(plots.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.stem in ("__init__", "common", "widgets"):
            continue
        tree = ast.parse(path.read_text())
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
        missing = [name for name in functions if name not in plots.__all__ or not hasattr(plots, name)]
        assert not missing, f"capslib.plots does not export {missing} of {path.name}"
    assert len(plots.__all__) == len(set(plots.__all__)), "two modules export the same name"


def test_importing_the_plots_loads_no_widgets():
    """The sliders are opt-in (``capslib.plots.widgets``): scripts and commands draw without ipywidgets."""
    code = "import sys, capslib.plots; print(sorted(m for m in sys.modules if m.startswith('ipywidgets')))"
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "[]"


def test_shared_helpers():
    np.testing.assert_array_equal(image2d(torch.ones(1, 1, 3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"digit must be one image \(1, H, W\) or \(H, W\), got shape \(2, 3, 3\)"):
        image2d(torch.zeros(2, 3, 3), "digit")
    assert colourbar_extend(torch.tensor([0.2, 0.5]), 0.0, 1.0) == "neither"
    assert colourbar_extend(np.array([-0.1, 1.1]), 0.0, 1.0) == "both"
    assert colourbar_extend(np.array([1.1]), 0.0, 1.0) == "max"


# Images and filters


def test_a_digit_is_drawn_as_given_on_the_fixed_grey_scale(images):
    for image in (images[0], images[0] * 0.01):  # a faint image is not stretched to full black
        ax = plots.plot_digit(image, pixel_grid=True, title="a digit")
        np.testing.assert_allclose(drawn(ax), image[0].numpy())
        assert ax.images[0].get_clim() == (0.0, 1.0)
    assert ax.get_title() == "a digit" and "column x" in ax.get_xlabel() and "row y" in ax.get_ylabel()
    assert list(ax.get_xticks()) == list(range(0, 28, 4))
    assert list(plots.plot_digit(images[0]).get_xticks()) == []


def test_a_batch_is_one_captioned_panel_per_image(images):
    fig = plots.plot_images(images[:3], captions=["a", "b", "c"], ncols=2)
    shown = panels(fig)
    assert len(shown) == 3 and len(fig.axes) == 4  # a 2x2 grid, the fourth panel switched off
    assert [ax.get_title() for ax in shown] == ["a", "b", "c"]
    for ax, image in zip(shown, images, strict=False):
        np.testing.assert_allclose(drawn(ax), image[0].numpy())
        assert ax.images[0].get_clim() == (0.0, 1.0)
    assert "Images" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, H, W\)"):
        plots.plot_images(torch.zeros(28, 28))


def test_each_filter_is_drawn_on_its_own_scale_with_white_at_zero(capsnet):
    weight = capsnet.conv1.weight.detach()[:5]  # (5, 1, 9, 9)
    shown = panels(plots.plot_filters(weight, ncols=3))
    assert len(shown) == 5 and [ax.get_title() for ax in shown] == ["0", "1", "2", "3", "4"]
    for ax, kernel in zip(shown, weight[:, 0], strict=True):
        limit = float(kernel.abs().max())
        np.testing.assert_allclose(ax.images[0].get_clim(), (-limit, limit), rtol=1e-6)
        np.testing.assert_allclose(drawn(ax), kernel.numpy())
    with pytest.raises(ValueError, match=r"\(F, 1, k, k\)"):
        plots.plot_filters(torch.zeros(4, 3, 9, 9))


def test_feature_maps_share_one_scale(capsnet, images):
    with torch.no_grad():
        maps = torch.relu(capsnet.conv1(images[:1]))[0, :6]  # (6, 20, 20)
    fig = plots.plot_feature_maps(maps, indices=[10, 11, 12, 13, 14, 15])
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == [f"filter {k}" for k in range(10, 16)]
    assert {ax.images[0].get_clim() for ax in shown} == {(0.0, float(maps.max()))}
    for ax, feature in zip(shown, maps, strict=True):
        np.testing.assert_allclose(drawn(ax), feature.numpy())
    assert fig.axes[-1].get_ylabel() == "activation (ReLU)"  # the colour bar


# Capsules


def test_capsule_anatomy_outlines_the_capsules_channels(capsnet, images):
    with torch.no_grad():
        primary = capsnet.primary_caps.inner(torch.relu(capsnet.conv1(images[:1])))[0]  # (256, 6, 6)
    capsule = 2 * 36 + 3 * 6 + 4  # type 2, row 3, col 4
    fig = plots.plot_capsule_anatomy(primary, capsule=capsule)
    matrix_ax, type_ax, bars_ax = fig.axes[:3]  # the colour bars come after
    outline = matrix_ax.patches[0]
    assert (outline.get_x(), outline.get_y(), outline.get_height()) == (3 * 6 + 4 - 0.5, 16 - 0.5, 8)
    assert (type_ax.patches[0].get_x(), type_ax.patches[0].get_y()) == (4 - 0.5, 3 - 0.5)
    heights = [bar.get_height() for bar in bars_ax.patches]
    np.testing.assert_allclose(heights, primary[16:24, 3, 4].numpy(), rtol=1e-6)
    assert "n = 2*36 + 3*6 + 4 = 94" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match=r"capsule must lie in \[0, 1152\)"):
        plots.plot_capsule_anatomy(primary, capsule=1152)


def test_capsule_grid_draws_one_type_per_panel_on_one_scale():
    values = torch.linspace(0.2, 0.9, 4 * 36)  # (N_in,) for 4 types
    fig = plots.plot_capsule_grid(values, label="length")
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["type 0", "type 1", "type 2", "type 3"]
    for t, ax in enumerate(shown):
        np.testing.assert_allclose(drawn(ax), values[36 * t : 36 * (t + 1)].view(6, 6).numpy())
    np.testing.assert_allclose(list({ax.images[0].get_clim() for ax in shown})[0], (0.2, 0.9), rtol=1e-6)
    assert len({ax.images[0].get_clim() for ax in shown}) == 1
    signed = panels(plots.plot_capsule_grid(torch.linspace(-0.5, 0.25, 72)))
    assert {ax.images[0].get_clim() for ax in signed} == {(-0.5, 0.5)}  # diverging, white at zero
    assert signed[0].images[0].get_cmap().name == "RdBu_r"
    with pytest.raises(ValueError, match="multiple of 36"):
        plots.plot_capsule_grid(torch.zeros(40))


def test_capsule_output_draws_the_lengths_and_the_pose_on_fixed_axes():
    lengths, pose = torch.linspace(0.05, 0.5, 10), torch.linspace(-0.3, 0.2, 16)
    fig = plots.plot_capsule_output(lengths, pose, class_index=3, pose_limit=0.5)
    length_ax, pose_ax = fig.axes
    np.testing.assert_allclose([bar.get_height() for bar in length_ax.patches], lengths.numpy(), rtol=1e-6)
    np.testing.assert_allclose([bar.get_height() for bar in pose_ax.patches], pose.numpy(), rtol=1e-6)
    colours = {bar.get_facecolor() for k, bar in enumerate(length_ax.patches) if k != 3}
    assert len(colours) == 1 and length_ax.patches[3].get_facecolor() not in colours  # the winner stands out
    assert length_ax.get_ylim() == (0.0, 1.0) and pose_ax.get_ylim() == (-0.5, 0.5)
    small = plots.plot_capsule_output(lengths, pose * 0.01, class_index=3, pose_limit=0.5)
    assert small.axes[1].get_ylim() == (-0.5, 0.5)  # a fixed limit: a small pose looks small
    with pytest.raises(ValueError, match=r"class_index must lie in \[0, 10\), got 10"):
        plots.plot_capsule_output(lengths, pose, class_index=10)


# The equations as curves


def test_squash_curve_is_eq_1():
    ax = plots.plot_squash(max_length=4.0)
    norm, length = ax.lines[0].get_data()
    np.testing.assert_allclose(length, norm**2 / (1 + norm**2))
    assert norm.max() == 4.0 and ax.get_xlabel() == "input length |s|" and ax.get_ylabel() == "output length |v|"


def test_margin_loss_curves_are_eq_4_on_a_fixed_axis():
    ylims = set()
    for m_plus in (0.8, 0.9):
        ax = plots.plot_margin_loss(m_plus=m_plus, m_minus=0.1, lambda_=0.5)
        (length, present), (_, absent) = ax.lines[0].get_data(), ax.lines[1].get_data()
        np.testing.assert_allclose(present, np.clip(m_plus - length, 0, None) ** 2)
        np.testing.assert_allclose(absent, 0.5 * np.clip(length - 0.1, 0, None) ** 2)
        assert ax.lines[2].get_xdata()[0] == m_plus  # the m+ marker
        ylims.add(ax.get_ylim())
    assert ylims == {(0.0, 1.05)}, "a slider over m+ must not rescale the axis"


def test_loss_comparison_gradients():
    fig = plots.plot_loss_comparison(m_plus=0.9)
    gradients = fig.axes[1]
    p, cross_entropy = gradients.lines[0].get_data()
    _, margin = gradients.lines[1].get_data()
    np.testing.assert_allclose(cross_entropy, p - 1.0)
    assert (margin[p >= 0.9] == 0).all() and (margin[p < 0.9] < 0).all()  # the margin stops pulling at m+
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


# Routing


def test_routing_iterations_draw_the_traced_coupling_on_fixed_scales(capsnet, images):
    """The mean-coupling colours are fixed around 1/N_out and the axes fixed across iteration counts."""
    with torch.no_grad():
        short = capsnet(images, return_trace=True).trace  # 3 iterations
    fig = plots.plot_routing_iterations(short, example=1, max_iterations=10)
    lengths, coupling, histogram = fig.axes[:3]
    expected = torch.stack([step.c[1].mean(dim=0) for step in short])  # (R, N_out)
    np.testing.assert_allclose(drawn(coupling), expected.numpy(), atol=1e-5)  # float32 means in another order
    target = int(short[-1].v[1].norm(dim=-1).argmax())  # the class followed: the longest at the end
    bold = max(lengths.lines, key=lambda line: line.get_linewidth())
    assert bold.get_label() == str(target)
    np.testing.assert_allclose(bold.get_ydata(), [float(step.v[1, target].norm()) for step in short], rtol=1e-5)
    norm = coupling.images[0].norm
    assert (norm.vmin, norm.vcenter, norm.vmax) == (0.0, 0.1, 0.2)  # white = uniform 1/10
    assert lengths.get_xlim() == (0.5, 10.5) and coupling.get_ylim() == (10.5, 0.5)
    assert histogram.get_xlim() == (0.0, 1.0) and histogram.get_ylim() == (0.8, 1152 * 1.5)
    assert len(histogram.patches) == 3  # one histogram per iteration
    assert "fixed scale 0 .. 0.2" in fig.axes[3].get_ylabel()
    assert "white = uniform 1/N_out = 0.1" in coupling.get_title()
    zoomed = plots.plot_routing_iterations(short, coupling_limits=(0.05, 0.15))
    assert zoomed.axes[1].images[0].norm.vmax == 0.15


def test_routing_lab_plot_keeps_axes_and_colours_fixed():
    from capslib.analysis.routing_lab import synthetic_votes

    u_hat, membership = synthetic_votes(num_out=2, cluster_size=4, num_scattered=6, seed=1)
    result = capslib.dynamic_routing(u_hat, iterations=4, return_trace=True)
    limits = set()
    for iteration in (1, 4):
        fig = plots.plot_routing_lab(result, iteration, membership)
        assert len(fig.axes) == 4  # 2 outputs, the coupling over iterations, the colour bar
        limits.add((fig.axes[0].get_xlim(), fig.axes[1].get_ylim()))
        bar = fig.axes[-1]
        assert bar.get_ylim() == (0.0, 1.0) and "fixed scale 0 .. 1" in bar.get_ylabel()
        assert fig.axes[2].get_ylim() == (0.0, 1.0)
        assert fig._suptitle.get_text().endswith(f"iteration {iteration} of 4")
    assert len(limits) == 1  # the same axes at every iteration
    u_hat3, membership3 = synthetic_votes(num_out=3, dim=3, cluster_size=3, num_scattered=2)
    fig = plots.plot_routing_lab(capslib.dynamic_routing(u_hat3, 2, return_trace=True), 2, membership3)
    assert "first 2 of 3 components" in fig.axes[0].get_xlabel()


def test_coupling_polarisation_draws_the_winners_coupling_on_a_fixed_scale(capsnet, images):
    with torch.no_grad():
        u_hat = capsnet.digit_caps.prediction_vectors(capsnet.primary_caps(torch.relu(capsnet.conv1(images[:1]))))
    trace = capslib.dynamic_routing(u_hat, 3, return_trace=True, agreement_scale=100.0).trace
    fig = plots.plot_coupling_polarisation(trace, title="x100")
    winner = int(trace[-1].v[0].norm(dim=-1).argmax())
    assert fig.axes[0].get_xlim() == (0.0, 1.0)
    assert [ax.images[0].get_clim() for ax in fig.axes[1:4]] == [(0.0, 1.0)] * 3
    for r, ax in enumerate(fig.axes[1:4]):
        np.testing.assert_allclose(drawn(ax), trace[r].c[0, :, winner].view(32, 36).numpy(), rtol=1e-6)
        assert ax.get_title().startswith(f"r={r + 1}: c to class {winner}")


# Figure 4: capsule dimensions


def test_dimension_grid_draws_the_reconstructions_with_the_middle_offset_zero(capsnet, images):
    perturbed = interpret.perturb_dimensions(capsnet, images[0], class_index=2)
    assert perturbed["values"][5].item() == 0.0
    fig = plots.plot_dimension_grid(perturbed)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[5] == "+0.00" and labels[0] == "-0.25" and labels[-1] == "+0.25"
    mosaic = drawn(ax)
    assert mosaic.shape == (16 * 28, 11 * 28)  # a row per dimension, a column per offset
    np.testing.assert_allclose(mosaic[28:56, 3 * 28 : 4 * 28], perturbed["reconstructions"][1, 3, 0].numpy())
    assert ax.images[0].get_clim() == (0.0, 1.0) and "digit capsule 2" in ax.get_title()


def test_reconstruction_from_pose_draws_the_decoded_poses(capsnet, images):
    pose = interpret.perturb_dimensions(capsnet, images[0], class_index=2)["pose"]
    offsets = torch.zeros(16)
    offsets[4] = 0.2
    fig = plots.plot_reconstruction_from_pose(capsnet, pose, class_index=2, offsets=offsets)
    unchanged, changed, bars = fig.axes
    decoded = interpret.decode_pose(capsnet, torch.stack([pose, pose + offsets]), class_index=2)  # (2, 1, 28, 28)
    np.testing.assert_allclose(drawn(unchanged), decoded[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(drawn(changed), decoded[1, 0].numpy(), atol=1e-6)
    heights = np.array([bar.get_height() for bar in bars.patches])  # (2 * 16,): the pose, then pose + offsets
    np.testing.assert_allclose(heights[16:] - heights[:16], offsets.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="offsets must have 16 numbers"):
        plots.plot_reconstruction_from_pose(capsnet, pose, class_index=2, offsets=[0.1] * 3)


def test_interpret_returns_tensors_and_restores_the_model(images, make_capsnet):
    """The analysis functions draw nothing, return the documented shapes, and put back the model's
    training mode and routing iterations."""
    model = make_capsnet(0)  # its own: the test switches it to training mode
    assert not [name for name in interpret.__all__ if name.startswith("plot_")]
    model.train()
    maps = interpret.coupling_maps(model, images[0], iterations=2)
    assert model.training and model.routing_iterations == 3
    assert maps["coupling"].shape == (2, 10, 32, 6, 6)  # (R, N_out, T, H', W')
    assert maps["vote_lengths"].shape == (10, 32, 6, 6)  # (N_out, T, H', W')
    assert maps["lengths"].shape == (2, 10)  # (R, N_out)
    grids = interpret.mean_coupling(maps, class_index=3)  # (R, H', W')
    assert grids.shape == (2, 6, 6)
    torch.testing.assert_close(grids[0], torch.zeros(6, 6))  # iteration 1: every capsule sends 1/N_out
    perturbed = interpret.perturb_dimensions(model, images[0], class_index=2)
    assert model.training
    assert perturbed["reconstructions"].shape == (16, 11, 1, 28, 28)  # (D_out, V, C, H, W)
    unchanged = interpret.decode_pose(model, perturbed["pose"], class_index=2)  # (1, C, H, W)
    assert unchanged.shape == (1, 1, 28, 28) and model.training
    torch.testing.assert_close(perturbed["reconstructions"][:, 5], unchanged.expand(16, -1, -1, -1))  # offset 0
    with pytest.raises(ValueError, match="routing iterations must be an integer >= 1"):
        interpret.coupling_maps(model, images[0], iterations=0)
    assert model.routing_iterations == 3 and model.training


def test_dimension_effects_are_figure_4s_end_columns_averaged_over_images(images, make_capsnet):
    """Each dimension's effect is what perturb_dimensions (one image, one pose at a time) gives between
    its offsets -0.25 and +0.25, averaged over the images; batching does not change it."""
    model = make_capsnet(0)
    model.train()
    effects = interpret.dimension_effects(model, images, limit=0.25, batch_size=3)  # (16,)
    assert effects.shape == (16,) and model.training
    one_by_one = torch.stack(
        [
            (grid[:, -1] - grid[:, 0]).abs().flatten(1).mean(dim=1)  # (16,): offset +0.25 against -0.25
            for grid in (interpret.perturb_dimensions(model, image)["reconstructions"] for image in images)
        ]
    )  # (B, 16)
    torch.testing.assert_close(effects, one_by_one.mean(dim=0))
    torch.testing.assert_close(interpret.dimension_effects(model, images, batch_size=500), effects)
    for bad, message in (
        (dict(images=images[0]), r"images must be a non-empty batch \(B, C, H, W\), got \(1, 28, 28\)"),
        (dict(images=images, limit=0.0), "limit must be a positive offset, got 0.0"),
    ):
        with pytest.raises(ValueError, match=message):
            interpret.dimension_effects(model, **bad)
    without_decoder = capslib.CapsNet(reconstruction=False)
    with pytest.raises(ValueError, match="needs a model with a decoder"):
        interpret.dimension_effects(without_decoder, images)


def test_bad_indices_and_sizes_raise_value_errors(capsnet):
    image = torch.rand(1, 28, 28)
    trace = capsnet(image[None], return_trace=True).trace
    maps = interpret.coupling_maps(capsnet, image, iterations=2)
    pose = torch.rand(16)
    lab = capslib.dynamic_routing(torch.rand(1, 4, 2, 2), iterations=2, return_trace=True)
    cases = [
        (lambda: plots.plot_images(torch.rand(4, 1, 28, 28), captions=["a"]), "one caption per image"),
        (lambda: plots.plot_routing_iterations(trace, example=1), r"example must lie in \[0, 1\)"),
        (lambda: plots.plot_routing_iterations(trace, target=10), r"target must lie in \[0, 10\)"),
        (lambda: plots.plot_routing_iterations([]), "trace is empty"),
        (lambda: plots.plot_routing_iterations(trace, max_iterations=2), r"max_iterations must be >= the trace's 3"),
        (lambda: plots.plot_routing_iterations(trace, coupling_limits=(0.2, 0.3)), r"must enclose 1/N_out = 0.1"),
        (lambda: plots.plot_routing_lab(lab, iteration=0), r"iteration must be an integer in \[1, 2\], got 0"),
        (lambda: plots.plot_routing_lab(lab, 1, membership=torch.zeros(3)), r"membership must have shape \(N_in,\)"),
        (lambda: plots.plot_coupling_polarisation([]), "trace is empty"),
        (lambda: plots.plot_coupling(capsnet, image, class_index=-1), r"class_index must lie in \[0, 10\)"),
        (lambda: plots.plot_coupling_types(maps, class_index=10), r"class_index must lie in \[0, 10\)"),
        (lambda: plots.plot_coupling_types(maps, class_index=1, iteration=2), r"iteration must lie in \[-2, 2\)"),
        (lambda: interpret.perturb_dimensions(capsnet, image, class_index=10), r"class_index must lie in \[0, 10\)"),
        (lambda: interpret.decode_pose(capsnet, torch.rand(2, 8), class_index=1), r"poses must have shape \(16,\)"),
        (lambda: interpret.mean_coupling(maps, class_index=10), r"class_index must lie in \[0, 10\)"),
        (lambda: plots.plot_reconstruction_from_pose(capsnet, pose, class_index=10), r"must lie in \[0, 10\)"),
        (lambda: plots.plot_confusion_matrix(torch.zeros(3, 4)), r"square confusion matrix"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_widgets_take_controls_and_partials_only():
    """Constants are bound with functools.partial; a plain value where a control belongs is refused."""
    widgets = pytest.importorskip("ipywidgets")
    from functools import partial

    from capslib.plots.widgets import CALLBACK_ERRORS, exercise_widgets, interactive_plot

    panel = interactive_plot(partial(plots.plot_margin_loss, m_minus=0.2), m_plus=widgets.FloatSlider(0.9, min=0.5))
    assert isinstance(panel, widgets.VBox)
    assert exercise_widgets() >= 2 and not CALLBACK_ERRORS
    assert panel.children[0].children[0].style.description_width == "initial"  # long labels are not cut off
    chosen = widgets.FloatSlider(0.1, style={"description_width": "120px"}, description="a set width")
    interactive_plot(partial(plots.plot_margin_loss, m_plus=0.9), m_minus=chosen)
    assert chosen.style.description_width == "120px"  # a width the notebook chose is kept
    with pytest.raises(ValueError, match="argument 'lambda_' of plot_margin_loss must be an ipywidgets control"):
        interactive_plot(plots.plot_margin_loss, lambda_=0.5)
