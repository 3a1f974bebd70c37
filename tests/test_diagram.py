"""capslib.plots.architecture draws the architecture with exactly the shapes capslib.trace_shapes reports,
and capslib.plots.why's figures draw (any warning is an error, as in test_plots.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib.analysis import equivariance as equivariance
from capslib.plots import why as plots_why  # noqa: E402
from capslib.plots.architecture import architecture_nodes, plot_architecture  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


def texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


@pytest.mark.parametrize(
    "config",
    [
        dict(),  # the paper's CapsNet
        dict(conv_channels=16, num_types=4, in_dim=6, out_dim=12, routing_iterations=2, image_shape=(1, 32, 32)),
        dict(conv_channels=16, num_types=4, reconstruction=False),
    ],
)
def test_every_traced_shape_is_drawn(config):
    torch.manual_seed(0)
    model = capslib.CapsNet(**config).eval()
    images = torch.zeros(3, *model.image_shape)  # (3, C, H, W)
    table = capslib.trace_shapes(model, images)
    drawn = texts(plot_architecture(model, images=images))
    for stage, shape, _ in table.rows:
        assert str(tuple(shape)) in drawn, f"{stage} {tuple(shape)} is not in the diagram"
    assert f"R = {model.routing_iterations}" in drawn
    assert ("reconstruction" in drawn) == (model.decoder is not None)


def test_operations_are_read_off_the_model():
    torch.manual_seed(0)
    model = capslib.CapsNet(conv_channels=16, num_types=4, in_dim=6, out_dim=12)
    table = capslib.trace_shapes(model, torch.zeros(1, 1, 28, 28))
    ops = "\n".join(node["op"] for node in architecture_nodes(model, table))
    assert "9x9 conv, stride 1, 16 filters" in ops and "9x9 conv, stride 2, 24 filters" in ops
    assert "W (144, 10, 12, 6)" in ops  # (N_in, N_out, D_out, D_in) of this model
    assert "decoder MLP 120 -> 512 -> 1024 -> 784" in ops


def test_default_model_and_given_axes():
    fig, ax = plt.subplots()
    assert plot_architecture(ax=ax) is fig
    assert "(1, 1152, 10, 16)" in texts(fig)  # the paper's u_hat for one image


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    model = capslib.CapsNet(conv_channels=16, num_types=4).eval()
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))  # (3, 1, 28, 28)
    shift = equivariance.measure_equivariance(model, images, "shift", [-1, 0, 1])
    rotate = equivariance.measure_equivariance(model, images, "rotate", [-10, 0, 10])
    return shift, rotate


def test_why_plots_draw(results):
    shift, rotate = results
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = maps[1, 1, 2] = 1.0
    global_max = maps.amax(dim=(1, 2), keepdim=True)  # (2, 1, 1)
    plots_why.plot_pooling_example(maps, [torch.nn.functional.max_pool2d(maps, 2), global_max], ["a", "b"])
    plots_why.plot_capsule_output(torch.rand(10), torch.randn(16), class_index=3)
    with pytest.raises(ValueError, match=r"class_index must lie in \[0, 10\), got 10"):
        plots_why.plot_capsule_output(torch.rand(10), torch.randn(16), class_index=10)
    plots_why.plot_equivariance_curves([shift, rotate])
    plots_why.plot_reconstruction_tracking([shift, rotate])
    outline = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pose = torch.eye(3)
    plots_why.plot_part_whole({"a": (outline, pose), "b": (outline, pose)}, {"a": pose, "b": pose})


def test_step_figure_keeps_its_scales(results):
    shift, _ = results
    limits = []
    for amount in (-1, 0, 1):
        fig = plots_why.plot_equivariance_step(shift, amount=amount, index=1)
        limits.append([ax.get_ylim() for ax in fig.axes[4:]])
        plt.close(fig)
    assert limits[0] == limits[1] == limits[2], "an axis range moved with the slider"
    with pytest.raises(ValueError, match=r"amount must be one of the measured \[-1.0, 0.0, 1.0\], got 2"):
        plots_why.plot_equivariance_step(shift, amount=2)
