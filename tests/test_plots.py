"""Every public drawing function of capslib.plots.figures and capslib.plots.trained draws; capslib.analysis.interpret
returns tensors of the documented shapes and leaves the model as it found it.

The notebooks call them too, but a notebook kernel hides warnings; here any warning (e.g. a
deprecated way of handing tensors to matplotlib) is an error, and the tick labels are checked.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib.analysis import interpret as interpret
from capslib.plots import figures as plots
from capslib.plots import trained as plots_trained  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return capslib.CapsNet().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # (B, 1, 28, 28)


def test_image_plots(images, model):
    plots.plot_digit(images[0], pixel_grid=True)
    plots.plot_images(images, captions=[str(k) for k in range(4)], ncols=2)
    plots.plot_filters(model.conv1.weight.detach()[:8])
    with torch.no_grad():
        features = torch.relu(model.conv1(images[:1]))[0]  # (256, 20, 20)
        primary = model.primary_caps.inner(features[None])[0]  # (256, 6, 6)
    plots.plot_feature_maps(features[:8], indices=list(range(8)))
    plots.plot_capsule_anatomy(primary, capsule=40)
    plots.plot_capsule_grid(torch.rand(1152))
    plots.plot_capsule_grid(torch.randn(1152), label="agreement")  # signed: diverging map


def test_curve_plots():
    plots.plot_squash()
    plots.plot_margin_loss()
    plots.plot_loss_comparison()
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_margin_loss": 0.8 / e, "train_accuracy": 0.9, "val_accuracy": 0.95}
        for e in (1, 2)
    ]
    plots_trained.plot_training_curves(history)


def test_routing_and_coupling_plots(model, images):
    out = model(images, return_trace=True)
    plots.plot_routing_iterations(out.trace, example=1)
    plots_trained.plot_coupling(model, images[0], class_index=3, iterations=2)
    maps = interpret.coupling_maps(model, images[0], iterations=2)
    plots_trained.plot_coupling_types(maps, class_index=3)


def test_routing_iterations_use_fixed_scales(model, images):
    """The mean-coupling colours are fixed around 1/N_out and the axes fixed across iteration counts."""
    short = model(images, return_trace=True).trace  # 3 iterations
    fig = plots.plot_routing_iterations(short, example=1, max_iterations=10)
    lengths, coupling, histogram = fig.axes[:3]
    norm = coupling.images[0].norm
    assert (norm.vmin, norm.vcenter, norm.vmax) == (0.0, 0.1, 0.2)  # white = uniform 1/10
    assert lengths.get_xlim() == (0.5, 10.5) and coupling.get_ylim() == (10.5, 0.5)
    assert histogram.get_xlim() == (0.0, 1.0) and histogram.get_ylim() == (0.8, 1152 * 1.5)
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
    assert len(limits) == 1  # the same axes at every iteration
    u_hat3, membership3 = synthetic_votes(num_out=3, dim=3, cluster_size=3, num_scattered=2)
    plots.plot_routing_lab(capslib.dynamic_routing(u_hat3, 2, return_trace=True), 2, membership3)


def test_coupling_polarisation_plot(model, images):
    with torch.no_grad():
        u_hat = model.digit_caps.prediction_vectors(model.primary_caps(torch.relu(model.conv1(images[:1]))))
    fig = plots.plot_coupling_polarisation(
        capslib.dynamic_routing(u_hat, 3, return_trace=True, agreement_scale=100.0).trace, title="x100"
    )
    assert fig.axes[0].get_xlim() == (0.0, 1.0)
    assert [ax.images[0].get_clim() for ax in fig.axes[1:4]] == [(0.0, 1.0)] * 3


def test_mistakes_and_confusion(images):
    labels, predictions = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 7, 3, 0])
    fig = plots_trained.plot_mistakes(images, labels, predictions, lengths=torch.rand(4, 10))
    assert len([ax for ax in fig.axes if ax.images]) == 2  # two mistakes drawn
    plots_trained.plot_mistakes(images, labels, labels)  # none: a message panel
    plots_trained.plot_confusion_matrix(torch.randint(0, 50, (10, 10)))


def test_dimension_plots_label_the_middle_offset_zero(model, images):
    perturbed = interpret.perturb_dimensions(model, images[0], class_index=2)
    assert perturbed["values"][5].item() == 0.0
    fig = plots_trained.plot_dimension_grid(perturbed)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[5] == "+0.00" and labels[0] == "-0.25" and labels[-1] == "+0.25"
    plots_trained.plot_reconstruction_from_pose(model, perturbed["pose"], class_index=2, offsets=[0.1] * 16)


def test_interpret_returns_tensors_and_restores_the_model(model, images):
    """The analysis functions draw nothing, return the documented shapes, and put back the model's
    training mode and routing iterations."""
    assert not [name for name in interpret.__all__ if name.startswith("plot_")]
    model.train()
    try:
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
    finally:
        model.eval()


def test_bad_indices_and_sizes_raise_value_errors(model):
    image = torch.rand(1, 28, 28)
    trace = model(image[None], return_trace=True).trace
    maps = interpret.coupling_maps(model, image, iterations=2)
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
        (lambda: plots_trained.plot_coupling(model, image, class_index=-1), r"class_index must lie in \[0, 10\)"),
        (lambda: plots_trained.plot_coupling_types(maps, class_index=10), r"class_index must lie in \[0, 10\)"),
        (
            lambda: plots_trained.plot_coupling_types(maps, class_index=1, iteration=2),
            r"iteration must lie in \[-2, 2\)",
        ),
        (lambda: interpret.perturb_dimensions(model, image, class_index=10), r"class_index must lie in \[0, 10\)"),
        (lambda: interpret.decode_pose(model, torch.rand(2, 8), class_index=1), r"poses must have shape \(16,\)"),
        (lambda: interpret.mean_coupling(maps, class_index=10), r"class_index must lie in \[0, 10\)"),
        (lambda: plots_trained.plot_reconstruction_from_pose(model, pose, class_index=10), r"must lie in \[0, 10\)"),
        (lambda: plots_trained.plot_confusion_matrix(torch.zeros(3, 4)), r"square confusion matrix"),
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
