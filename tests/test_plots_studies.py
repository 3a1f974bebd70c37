"""capslib.plots.studies: every run's curve and result drawn, errors from 0, clear errors for bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from capslib import plots  # noqa: E402


def run(variant, seed, accuracy, curve, affine=0.8):
    return {
        "variant": variant,
        "seed": seed,
        "test_accuracy": accuracy,
        "affine_accuracy": affine,
        "val_accuracy_per_epoch": curve,
    }


RESULTS = [
    run("capsnet-r1-recon", 0, 0.9960, [0.98, 0.99, 0.995]),
    run("capsnet-r1-recon", 1, 0.9955, [0.97, 0.99, 0.994]),
    run("capsnet-r3-recon", 0, 0.9962, [0.98, 0.992, 0.996], affine=None),
]


def test_every_run_is_a_curve_in_its_variants_colour():
    ax = plots.plot_validation_curves(RESULTS, variants=["capsnet-r3-recon", "capsnet-r1-recon"])
    lines = ax.get_lines()
    assert len(lines) == 3
    r3, r1_seed0, r1_seed1 = lines  # the order asked for, seeds in order
    assert r1_seed0.get_color() == r1_seed1.get_color() != r3.get_color()
    assert list(r3.get_xdata()) == [1, 2, 3]
    assert r3.get_ydata()[-1] == pytest.approx(0.4)
    assert ax.get_ylim()[0] == 0
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["capsnet-r3-recon", "capsnet-r1-recon", "seed 0", "seed 1"]  # colours, then markers
    assert r1_seed0.get_marker() == r3.get_marker() != r1_seed1.get_marker()  # one marker per seed
    assert len(ax.get_lines()) == 3  # the seed legend's entries are not lines of the plot
    plt.close("all")


def test_the_study_draws_every_run_as_a_dot_and_errors_from_zero():
    errors, affine = plots.plot_study(RESULTS, budget="3 epochs")
    dots = [line for line in errors.get_lines() if line.get_marker() == "."]
    assert sum(len(line.get_xdata()) for line in dots) == 3
    assert errors.get_ylim()[0] == 0 and affine.get_ylim() == (0, 100)
    assert "3 epochs" in errors.get_title()
    affine_dots = [line for line in affine.get_lines() if line.get_marker() == "."]
    assert sum(len(line.get_xdata()) for line in affine_dots) == 2  # one run has no affine test
    plt.close("all")


def test_the_axes_say_how_many_images_the_runs_were_measured_on():
    """A smoke run tested on 200 images and validated on 128 is labelled so, not as a full run's 10,000 and 5,000;
    the epochs are whole numbers."""
    small = [{**r, "test_images": 200, "config": {"val_size": 128}} for r in RESULTS]
    errors, affine = plots.plot_study(small)
    assert "(200 images)" in errors.get_ylabel() and "(200 images)" in affine.get_ylabel()
    ax = plots.plot_validation_curves(small)
    assert ax.get_ylabel() == "validation error % (128 images)"
    assert all(float(tick).is_integer() for tick in ax.get_xticks())
    mixed = [{**small[0], "test_images": 10000}, *small[1:]]
    assert "(200-10,000 images)" in plots.plot_study(mixed)[0].get_ylabel()
    plt.close("all")


def test_bad_input_says_what_was_expected():
    with pytest.raises(ValueError, match="expected runs of"):
        plots.plot_study(RESULTS, variants=["em"])
    with pytest.raises(ValueError, match="no val_accuracy_per_epoch"):
        plots.plot_validation_curves([{**RESULTS[0], "val_accuracy_per_epoch": []}])
