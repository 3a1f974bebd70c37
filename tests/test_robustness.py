"""capslib.evaluation.robustness: accuracy curves under one transformation at a time."""

from __future__ import annotations

import pytest
import torch

import capslib
from capslib.baselines import baseline_cnn
from capslib.data.affine import AffineParameters, affine_transform
from capslib.evaluation.robustness import robustness_curve


@pytest.fixture(scope="module")
def digits(mnist_test_tensors):
    images, labels = mnist_test_tensors
    return images[:300], labels[:300]


def test_the_shipped_capsnet_is_right_untransformed_and_falls_off_with_rotation(digits):
    images, labels = digits
    model = capslib.load_pretrained("cpu")
    curve = robustness_curve(model, images, labels, "rotation", [0, 90], progress=False)
    with torch.no_grad():
        plain = (model(images).lengths.argmax(dim=1) == labels).double().mean()
    assert curve[0] == pytest.approx(float(plain))  # amount 0 is the untransformed test set
    assert curve[0] > 0.98 and curve[1] < 0.5  # a digit on its side is mostly misread


def test_each_amount_transforms_every_image_alike(digits):
    images, labels = digits
    torch.manual_seed(0)
    model = baseline_cnn("cnn-small").eval()
    curve = robustness_curve(model, images[:50], labels[:50], "scale", [0.8, 1.2], batch_size=16, progress=False)
    for k, scale in enumerate((0.8, 1.2)):
        moved = affine_transform(images[:50], AffineParameters.identity(50, scale_x=scale, scale_y=scale))
        with torch.no_grad():
            expected = (model(moved).argmax(dim=1) == labels[:50]).double().mean()
        assert curve[k] == pytest.approx(float(expected))


@pytest.mark.parametrize(
    "part, amounts, message",
    [
        ("spin", [0], r"part must be one of \('rotation'"),
        ("shear", [1.5], r"shear amounts must be a non-empty list within \[-0.99, 0.99\], got \[1.5\]"),
        ("rotation", [], "non-empty"),
    ],
)
def test_bad_requests_say_what_was_expected(digits, part, amounts, message):
    with pytest.raises(ValueError, match=message):
        robustness_curve(baseline_cnn("cnn-small"), *digits, part, amounts, progress=False)


def test_the_cli_writes_every_model_and_curve_and_load_reads_it_back(tmp_path, capsys):
    import json

    from capslib.evaluation.robustness import CURVES, load_robustness, main

    out = tmp_path / "robustness.json"
    main(["--out", str(out), "--test-limit", "40", "--threads", "1"])
    printed = capsys.readouterr().out
    result = load_robustness(out)
    assert result["test_images"] == 40 and result["curves"] == {p: [float(a) for a in v] for p, v in CURVES.items()}
    assert set(result["models"]) == {"capsnet_mnist", "cnn_baseline_mnist"}
    for name, measured in result["models"].items():
        assert f"{name}: clean {100 * measured['clean_accuracy']:.2f}%" in printed
        assert measured["clean_errors"] == round(40 * (1 - measured["clean_accuracy"]))
        # The identity point of each curve is the clean test set (bilinear identity: exact to rounding).
        for part, amounts in result["curves"].items():
            identity = amounts.index(1.0 if part == "scale" else 0.0)
            assert measured["curves"][part][identity] == measured["clean_accuracy"], (name, part)
    assert "--test-limit 40" in result["command"]
    assert json.loads(out.read_text()) == result


@pytest.mark.parametrize(
    "content, error, message",
    [
        (None, FileNotFoundError, "python -m capslib.robustness --out"),
        ("{not json", ValueError, "not a JSON robustness result"),
        ('{"models": {}}', ValueError, r"missing \['curves', 'test_images', 'command'\]"),
        (
            '{"models": {"m": {"clean_accuracy": 1}}, "curves": {}, "test_images": 1, "command": ""}',
            ValueError,
            "model 'm' lacks",
        ),
        (
            '{"models": {"m": {"clean_accuracy": 1, "clean_errors": 0, "affine_accuracy": 1, "affine_errors": 0,'
            ' "curves": {"shear": [1.0]}}}, "curves": {"shear": [0, 0.2]}, "test_images": 1, "command": ""}',
            ValueError,
            "no 2-point shear curve",
        ),
    ],
)
def test_a_missing_or_malformed_results_file_says_what_was_expected(tmp_path, content, error, message):
    from capslib.evaluation.robustness import load_robustness

    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=message):
        load_robustness(path)


def test_paired_comparison_counts_and_the_exact_mcnemar_p_value():
    from capslib.evaluation.robustness import paired_comparison

    a = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 0, 0, 1, 0, 1, 0], dtype=torch.bool)
    result = paired_comparison(a, b)
    assert (result["both_right"], result["only_a"], result["only_b"], result["both_wrong"]) == (2, 3, 1, 2)
    # 4 discordant images, 1 of them B's: P(X <= 1) = (1 + 4) / 16, doubled = 0.625 (by hand).
    assert result["p_value"] == pytest.approx(0.625)
    assert paired_comparison(a, a)["p_value"] == 1.0  # nothing discordant: no evidence either way
    lopsided = paired_comparison(torch.ones(20, dtype=torch.bool), torch.zeros(20, dtype=torch.bool))
    assert lopsided["p_value"] == pytest.approx(2 / 2**20)
    with pytest.raises(ValueError, match=r"\(N,\) boolean tensors of one shape, got \(3,\) and \(4,\)"):
        paired_comparison(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
