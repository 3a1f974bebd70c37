"""capslib.plots.robustness: the robustness curves and one transformed digit, drawn honestly."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from capslib.baselines import baseline_cnn  # noqa: E402
from capslib.plots import plot_robustness_curves, plot_transformed_digit, transformed_view  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


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
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    with pytest.raises(ValueError, match=r"no curve for \['shear'\]"):
        plot_robustness_curves(RESULT, parts=["shear"])


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return baseline_cnn("cnn-small").eval()


def test_the_untransformed_view_is_what_both_models_say_of_the_image(small_capsnet, cnn):
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))
    view = transformed_view(small_capsnet, cnn, image)
    torch.testing.assert_close(view["image"], image[0], atol=1e-5, rtol=0)  # the identity resamples exactly
    with torch.no_grad():
        lengths = small_capsnet(image[None]).lengths[0]
        logits = cnn(image[None])[0]
    torch.testing.assert_close(view["lengths"], lengths, atol=1e-5, rtol=1e-4)
    assert view["capsnet_prediction"] == int(lengths.argmax()) and view["cnn_prediction"] == int(logits.argmax())
    assert view["probabilities"].sum().item() == pytest.approx(1.0)
    moved = transformed_view(small_capsnet, cnn, image, rotation=90)
    assert not torch.allclose(moved["image"], view["image"])
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*got \(3, 28, 28\)"):
        transformed_view(small_capsnet, cnn, torch.rand(3, 28, 28))


def test_the_digit_view_draws_the_view_on_fixed_scales_at_every_slider_position(small_capsnet, cnn):
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(2))
    for rotation in (0, 45):
        picture, lengths, reconstruction, probabilities = plot_transformed_digit(
            small_capsnet, cnn, image, label=3, rotation=rotation
        )
        view = transformed_view(small_capsnet, cnn, image, rotation=rotation)
        np.testing.assert_allclose(np.asarray(picture.images[0].get_array()), view["image"].numpy())
        np.testing.assert_allclose([bar.get_height() for bar in lengths.patches], view["lengths"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(
            [bar.get_height() for bar in probabilities.patches], view["probabilities"].numpy(), rtol=1e-6
        )
        assert lengths.get_ylim() == (0, 1) and probabilities.get_ylim() == (0, 1)
        assert picture.images[0].get_clim() == (0, 1) and reconstruction.images[0].get_clim() == (0, 1)
        assert f"rot {rotation:+.0f}" in picture.get_title()
        # two quantities, two labels; digits dark on white as in the rest of the series
        assert lengths.get_ylabel().startswith("length") and probabilities.get_ylabel().startswith("probability")
        assert f"sum {float(view['lengths'].sum()):.2f}" in lengths.get_title()
        assert picture.images[0].get_cmap().name == reconstruction.images[0].get_cmap().name == "gray_r"
