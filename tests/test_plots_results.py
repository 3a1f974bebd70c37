"""capslib.plots.results: training curves, the confusion matrix, the mistakes and Table 1's ablation
draw the numbers they are given, with bars from zero and the paper's numbers beside ours."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from capslib.experiments.table1 import PAPER_TEST_ERROR  # noqa: E402
from capslib.plots import plot_ablation, plot_confusion_matrix, plot_mistakes, plot_training_curves  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("close_figures")]


HISTORY = [
    {
        "epoch": e,
        "train_loss": 1 / e,
        "train_margin_loss": 0.8 / e,
        "train_accuracy": 0.9 + e / 100,
        "val_accuracy": 0.95,
    }
    for e in (1, 2, 3)
]


def test_training_curves_are_the_history():
    fig = plot_training_curves(HISTORY, title="run 1")
    loss, accuracy = fig.axes
    total, margin = loss.lines
    np.testing.assert_allclose(total.get_ydata(), [1, 1 / 2, 1 / 3])
    np.testing.assert_allclose(margin.get_ydata(), [0.8, 0.4, 0.8 / 3])
    train, val = accuracy.lines
    np.testing.assert_allclose(train.get_ydata(), [91, 92, 93])  # in percent
    np.testing.assert_allclose(val.get_ydata(), [95, 95, 95])
    assert list(loss.get_xticks()) == [1, 2, 3]
    assert loss.get_ylabel() and accuracy.get_ylabel() == "accuracy (%)" and fig._suptitle.get_text() == "run 1"
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([])


def test_confusion_matrix_writes_every_nonzero_count():
    confusion = torch.tensor([[50, 0, 2], [1, 40, 0], [0, 0, 45]])
    ax = plot_confusion_matrix(confusion)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), confusion.numpy() + 1)  # log scale of count + 1
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert written == {(0, 0): "50", (0, 2): "2", (1, 0): "1", (1, 1): "40", (2, 2): "45"}
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"


def test_mistakes_are_the_misclassified_images_titled_true_to_predicted():
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels, predictions = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 7, 3, 0])
    lengths = torch.full((4, 10), 0.25)
    fig = plot_mistakes(images, labels, predictions, lengths=lengths)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["2 -> 7\n|v| 0.25", "4 -> 0\n|v| 0.25"]
    np.testing.assert_allclose(np.asarray(shown[1].images[0].get_array()), images[3, 0].numpy())
    assert "2 mistakes in 4 images" in fig._suptitle.get_text()
    none = plot_mistakes(images, labels, labels)
    assert not any(ax.images for ax in none.axes) and none.axes[0].get_title().startswith("0 mistakes")
    names = plot_mistakes(images, labels, predictions, class_names=[str(k) * 2 for k in range(10)], max_images=1)
    assert [ax.get_title() for ax in names.axes if ax.images] == ["22 -> 77"]
    assert "first 1 shown" in names._suptitle.get_text()


RUNS = [
    {"variant": "capsnet-r1", "seed": s, "test_accuracy": a, "affine_accuracy": f}
    for s, a, f in [(0, 0.94, 0.85), (1, 0.95, 0.86), (2, 0.96, 0.84)]
] + [{"variant": "cnn-small", "seed": 0, "test_accuracy": 0.93, "affine_accuracy": None}]


def bar_heights(ax) -> list[float]:
    return [patch.get_height() for patch in ax.patches]


def test_ablation_draws_ours_and_the_paper_on_one_axis_from_zero():
    errors, affine = plot_ablation(RUNS, budget="tiny")
    paper = [float(t.split("+-")[0]) for t in PAPER_TEST_ERROR.values()]
    # slots in VARIANTS order: the four CapsNets (ours only for r1, the paper's for all), the paper's
    # cnn-baseline, our cnn-small: our bars at slot - 0.2, the paper's at slot + 0.2, on the same axis
    bars = sorted((patch.get_x() + patch.get_width() / 2, patch.get_height()) for patch in errors.patches)
    assert [round(x, 6) for x, _ in bars] == [-0.2, 0.2, 1.2, 2.2, 3.2, 4.2, 4.8]
    assert [h for _, h in bars] == pytest.approx([5.0, *paper, 7.0])  # mean error of 6, 5, 4 %; the CNN's 7 %
    hatched = [patch.get_height() for patch in errors.patches if patch.get_hatch()]
    assert hatched == pytest.approx(paper)  # the paper's bars, and only they, are hatched
    assert bar_heights(affine) == pytest.approx([85.0])  # the CNN has no affine result: no bar
    assert errors.get_ylim()[0] == 0 and affine.get_ylim() == (0, 100)
    assert "tiny" in errors.get_title() and "one axis" in errors.get_title()
    assert "ours: tiny" in [t.get_text() for t in errors.get_legend().get_texts()]
    dots = [line for line in errors.lines if line.get_marker() == "."]
    assert sorted(np.concatenate([d.get_ydata() for d in dots]).round(6)) == [4.0, 5.0, 6.0, 7.0]  # every run drawn


def test_ablation_without_a_known_variant_is_refused():
    with pytest.raises(ValueError, match="no results of a known variant"):
        plot_ablation([{"variant": "mystery", "seed": 0, "test_accuracy": 1.0, "affine_accuracy": 1.0}])
