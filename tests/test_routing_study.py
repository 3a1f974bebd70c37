"""capslib.experiments.routing_study: the routings in Efficient-CapsNet end to end at a tiny budget,
and the paired tests read from the raw results."""

from __future__ import annotations

import pytest

from capslib.efficient_capsnet import EfficientCapsNet
from capslib.evaluation.robustness import mcnemar_p
from capslib.experiments import routing_study
from capslib.pretrained import load_checkpoint


def test_a_tiny_routing_study_runs_end_to_end(tmp_path):
    argv = ["--out", str(tmp_path), "--variants", "dynamic-r3", "self_attention", "--seeds", "0"]
    argv += ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--val-size", "64"]
    argv += ["--test-limit", "64", "--threads", "1"]
    summary = routing_study.main(argv)
    assert [row["variant"] for row in summary["routings"]] == ["dynamic-r3", "self_attention"]
    [pair] = summary["paired"]
    assert (pair["variant"], pair["seed"], pair["against"]) == ("self_attention", 0, "dynamic-r3")
    assert 0 <= pair["test_p_value"] <= 1 and "affine_p_value" in pair
    model = load_checkpoint(tmp_path / "checkpoints" / "self_attention_seed0" / "best.pt")
    assert isinstance(model, EfficientCapsNet) and model.routing == "self_attention"
    dynamic = load_checkpoint(tmp_path / "checkpoints" / "dynamic-r3_seed0" / "best.pt")
    assert dynamic.routing == "dynamic" and dynamic.routing_iterations == 3
    text = (tmp_path / "summary.md").read_text()
    assert "| self_attention | dynamic-r3 | 0 |" in text and "python -m capslib.routing_study --out" in text
    # one table header for the routings, without the paper's Table 1 column (no routing row has one)
    assert "| routing | runs | test images | test error % (mean +- std) | affine test accuracy % |" in text
    assert "paper" not in text


def result(variant, seed, test_wrong, affine_wrong=None, images=100):
    return {
        "variant": variant,
        "seed": seed,
        "test_images": images,
        "test_wrong": test_wrong,
        "affine_wrong": affine_wrong,
    }


def test_paired_tests_count_the_images_only_one_routing_got_right():
    results = [
        result("dynamic-r3", 0, [1, 2, 3, 4], [10, 11]),
        result("uniform", 0, [3, 4, 5], [10, 11, 12, 13]),
        result("uniform", 1, [1]),  # no reference run for seed 1: no pair
        result("em", 0, [1, 2, 3, 4], None),  # no affine set measured: no affine pair
    ]
    pairs = routing_study.paired_tests(results)
    assert [(p["variant"], p["seed"]) for p in pairs] == [("em", 0), ("uniform", 0)]
    em, uniform = pairs
    assert (em["test_only_this_right"], em["test_only_reference_right"]) == (0, 0)
    assert em["test_p_value"] == 1.0 and "affine_p_value" not in em
    assert (uniform["test_only_this_right"], uniform["test_only_reference_right"]) == (2, 1)
    assert uniform["test_p_value"] == pytest.approx(mcnemar_p(2, 1))
    assert (uniform["affine_only_this_right"], uniform["affine_only_reference_right"]) == (0, 2)


def test_status_of_a_study_not_yet_run_trains_nothing(tmp_path, capsys):
    found = routing_study.main(["--out", str(tmp_path), "--seeds", "0", "--epochs", "10", "--status"])
    assert [(row["name"], row["state"]) for row in found["status"]] == [
        (name, "not started") for name in routing_study.ROUTING_VARIANTS
    ]
    assert capsys.readouterr().out.splitlines()[-1] == "0 of 5 runs done"
    assert list(tmp_path.iterdir()) == []
