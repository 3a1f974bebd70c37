"""Every public drawing function of capslib.plots, capslib.interpret and capslib.evaluate draws.

The notebooks call them too, but a notebook kernel hides warnings; here any warning (e.g. a
deprecated way of handing tensors to matplotlib) is an error, and the tick labels are checked.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib import interpret, plots  # noqa: E402
from capslib.evaluate import plot_confusion_matrix  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return capslib.CapsNet().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # (B, 1, 28, 28)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


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
    interpret.plot_training_curves(history)


def test_routing_and_coupling_plots(model, images):
    out = model(images, return_trace=True)
    plots.plot_routing_iterations(out.trace, example=1)
    interpret.plot_coupling(model, images[0], class_index=3, iterations=2)
    maps = interpret.coupling_maps(model, images[0], iterations=2)
    interpret.plot_coupling_types(maps, class_index=3)


def test_mistakes_and_confusion(images):
    labels, predictions = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 7, 3, 0])
    fig = interpret.plot_mistakes(images, labels, predictions, lengths=torch.rand(4, 10))
    assert len([ax for ax in fig.axes if ax.images]) == 2  # two mistakes drawn
    interpret.plot_mistakes(images, labels, labels)  # none: a message panel
    plot_confusion_matrix(torch.randint(0, 50, (10, 10)))


def test_dimension_plots_label_the_middle_offset_zero(model, images):
    perturbed = interpret.perturb_dimensions(model, images[0], class_index=2)
    assert perturbed["values"][5].item() == 0.0
    fig = interpret.plot_dimension_grid(perturbed)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[5] == "+0.00" and labels[0] == "-0.25" and labels[-1] == "+0.25"
    interpret.plot_reconstruction_from_pose(model, perturbed["pose"], class_index=2, offsets=[0.1] * 16)


def test_bad_indices_and_sizes_raise_value_errors(model):
    image = torch.rand(1, 28, 28)
    trace = model(image[None], return_trace=True).trace
    maps = interpret.coupling_maps(model, image, iterations=2)
    pose = torch.rand(16)
    cases = [
        (lambda: plots.plot_images(torch.rand(4, 1, 28, 28), captions=["a"]), "one caption per image"),
        (lambda: plots.plot_routing_iterations(trace, example=1), r"example must lie in \[0, 1\)"),
        (lambda: plots.plot_routing_iterations(trace, target=10), r"target must lie in \[0, 10\)"),
        (lambda: plots.plot_routing_iterations([]), "trace is empty"),
        (lambda: interpret.plot_coupling(model, image, class_index=-1), r"class_index must lie in \[0, 10\)"),
        (lambda: interpret.plot_coupling_types(maps, class_index=10), r"class_index must lie in \[0, 10\)"),
        (lambda: interpret.plot_coupling_types(maps, class_index=1, iteration=2), r"iteration must lie in \[-2, 2\)"),
        (lambda: interpret.perturb_dimensions(model, image, class_index=10), r"class_index must lie in \[0, 10\)"),
        (lambda: interpret.plot_reconstruction_from_pose(model, pose, class_index=10), r"must lie in \[0, 10\)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
