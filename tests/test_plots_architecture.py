"""capslib.plots.architecture draws the architecture with exactly the shapes capslib.trace_shapes reports
(any warning is an error, as in test_plots.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib.plots import architecture_nodes, plot_architecture  # noqa: E402

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
