"""capslib.plots.evidence: the ablation, the robustness curves and one transformed digit, drawn honestly."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import capslib  # noqa: E402
from capslib.baselines import baseline_cnn  # noqa: E402
from capslib.experiments.ablation import PAPER_TEST_ERROR  # noqa: E402
from capslib.plots.evidence import (  # noqa: E402
    plot_ablation,
    plot_robustness_curves,
    plot_transformed_digit,
    transformed_view,
)

pytestmark = pytest.mark.usefixtures("close_figures")


RUNS = [
    {"variant": "capsnet-r1", "seed": s, "test_accuracy": a, "affine_accuracy": f}
    for s, a, f in [(0, 0.94, 0.85), (1, 0.95, 0.86), (2, 0.96, 0.84)]
] + [{"variant": "cnn-small", "seed": 0, "test_accuracy": 0.93, "affine_accuracy": None}]


def bar_heights(ax) -> list[float]:
    return [patch.get_height() for patch in ax.patches]


def test_ablation_bars_are_the_means_from_zero_and_the_paper_shows_all_of_table_1():
    ours, paper, affine = plot_ablation(RUNS, budget="tiny")
    assert bar_heights(ours) == pytest.approx([5.0, 7.0])  # mean error of 6, 5, 4 %; the CNN's 7 %
    assert bar_heights(affine) == pytest.approx([85.0])  # the CNN has no affine result: no bar
    assert bar_heights(paper) == pytest.approx([float(t.split("+-")[0]) for t in PAPER_TEST_ERROR.values()])
    assert ours.get_ylim()[0] == 0 and paper.get_ylim()[0] == 0 and affine.get_ylim() == (0, 100)
    assert "tiny" in ours.get_title()
    dots = [line for line in ours.lines if line.get_marker() == "."]
    assert sorted(np.concatenate([d.get_ydata() for d in dots]).round(6)) == [4.0, 5.0, 6.0, 7.0]  # every run drawn


def test_ablation_without_a_known_variant_is_refused():
    with pytest.raises(ValueError, match="no results of a known variant"):
        plot_ablation([{"variant": "mystery", "seed": 0, "test_accuracy": 1.0, "affine_accuracy": 1.0}])


RESULT = {
    "curves": {"rotation": [-30.0, 0.0, 30.0], "scale": [0.8, 1.0]},
    "models": {
        "capsnet_mnist": {"curves": {"rotation": [0.5, 0.99, 0.6], "scale": [0.9, 0.99]}},
        "cnn_baseline_mnist": {"curves": {"rotation": [0.4, 0.98, 0.7], "scale": [0.8, 0.98]}},
    },
}


def test_robustness_curves_are_the_accuracies_on_a_full_0_to_100_axis():
    axes = plot_robustness_curves(RESULT)
    assert len(axes) == 2
    for ax, part in zip(axes, RESULT["curves"], strict=True):
        assert ax.get_ylim() == (0, 100)
        drawn = {line.get_label(): line.get_ydata() for line in ax.lines}
        np.testing.assert_allclose(drawn["CapsNet"], 100 * np.array(RESULT["models"]["capsnet_mnist"]["curves"][part]))
        np.testing.assert_allclose(drawn["CNN"], 100 * np.array(RESULT["models"]["cnn_baseline_mnist"]["curves"][part]))
    with pytest.raises(ValueError, match=r"no curve for \['shear'\]"):
        plot_robustness_curves(RESULT, parts=["shear"])


def tiny_models():
    torch.manual_seed(0)
    capsnet = capslib.CapsNet(conv_channels=16, num_types=4, in_dim=8, out_dim=8)
    cnn = baseline_cnn("cnn-small")
    return capsnet, cnn


def test_the_untransformed_view_is_what_both_models_say_of_the_image():
    capsnet, cnn = tiny_models()
    image = torch.rand(1, 28, 28)
    view = transformed_view(capsnet, cnn, image)
    torch.testing.assert_close(view["image"], image[0], atol=1e-5, rtol=0)  # the identity resamples exactly
    with torch.no_grad():
        capsnet.eval(), cnn.eval()
        lengths = capsnet(image[None]).lengths[0]
        logits = cnn(image[None])[0]
    torch.testing.assert_close(view["lengths"], lengths, atol=1e-5, rtol=1e-4)
    assert view["capsnet_prediction"] == int(lengths.argmax()) and view["cnn_prediction"] == int(logits.argmax())
    assert view["probabilities"].sum().item() == pytest.approx(1.0)
    moved = transformed_view(capsnet, cnn, image, rotation=90)
    assert not torch.allclose(moved["image"], view["image"])
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*got \(3, 28, 28\)"):
        transformed_view(capsnet, cnn, torch.rand(3, 28, 28))


def test_the_digit_view_keeps_its_scales_fixed_at_every_slider_position():
    capsnet, cnn = tiny_models()
    for rotation in (0, 45):
        picture, lengths, reconstruction, probabilities = plot_transformed_digit(
            capsnet, cnn, torch.rand(1, 28, 28), label=3, rotation=rotation
        )
        assert lengths.get_ylim() == (0, 1) and probabilities.get_ylim() == (0, 1)
        assert picture.images[0].get_clim() == (0, 1) and reconstruction.images[0].get_clim() == (0, 1)
        assert f"rot {rotation:+.0f}" in picture.get_title()
