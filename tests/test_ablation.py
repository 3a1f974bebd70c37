"""capslib.experiments.ablation: Table 1's runs end to end at a tiny budget; results read back strictly."""

from __future__ import annotations

import json
import math

import pytest

from capslib.baselines import BaselineCNN
from capslib.experiments import ablation as ablation
from capslib.model import CapsNet
from capslib.pretrained import load_checkpoint


def test_a_tiny_ablation_runs_end_to_end_and_resumes_by_skipping_done_runs(tmp_path, capsys):
    argv = [
        "--out",
        str(tmp_path),
        "--variants",
        "capsnet-r1",
        "cnn-small",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--batch-size",
        "32",
        "--val-size",
        "64",
        "--test-limit",
        "64",
        "--threads",
        "1",
    ]
    rows = ablation.main(argv)
    assert [row["variant"] for row in rows] == ["capsnet-r1", "cnn-small"]
    assert all(row["runs"] == 2 and row["seeds"] == [0, 1] and row["test_images"] == "64" for row in rows)
    results = ablation.load_results(tmp_path)
    assert len(results) == 4
    for result in results:
        assert result["test_images"] == 64 and 0 <= result["test_accuracy"] <= 1
        assert result["affine_accuracy"] is not None
        assert result["config"]["train_limit"] == 64 and result["config"]["epochs"] == 1
        assert len(result["val_accuracy_per_epoch"]) == 1 and result["train_seconds"] > 0
    capsnet = next(r for r in results if r["variant"] == "capsnet-r1")
    assert capsnet["config"]["routing_iterations"] == 1 and capsnet["config"]["reconstruction"] is False
    assert isinstance(load_checkpoint(tmp_path / "checkpoints" / "capsnet-r1_seed0" / "best.pt"), CapsNet)
    assert isinstance(load_checkpoint(tmp_path / "checkpoints" / "cnn-small_seed1" / "best.pt"), BaselineCNN)
    summary = (tmp_path / "summary.md").read_text()
    assert "| capsnet-r1 | 2 | 64 |" in summary and "0.34 +- 0.032" in summary
    assert "python -m capslib.ablation --out" in summary  # the exact command
    capsys.readouterr()
    ablation.main(argv)  # again: every run is done, nothing retrains
    assert capsys.readouterr().out.count("done already") == 4


def fake_result(variant: str, seed: int, accuracy: float, affine: float | None = 0.5) -> dict:
    return {
        "variant": variant,
        "seed": seed,
        "test_accuracy": accuracy,
        "test_errors": round((1 - accuracy) * 1e4),
        "test_images": 10_000,
        "affine_accuracy": affine,
        "best_val_accuracy": accuracy,
    }


def test_the_summary_is_mean_and_sample_std_in_table_1s_order():
    results = [
        fake_result("cnn-small", 0, 0.99),
        fake_result("capsnet-r3-recon", 0, 0.996),
        fake_result("capsnet-r3-recon", 1, 0.997),
        fake_result("capsnet-r3-recon", 2, 0.995),
    ]
    rows = ablation.summarize(results)
    assert [row["variant"] for row in rows] == ["capsnet-r3-recon", "cnn-small"]
    assert rows[0]["test_error_percent"] == pytest.approx(0.4)
    assert rows[0]["test_error_std"] == pytest.approx(0.1)  # sample std of 0.4, 0.3, 0.5
    assert rows[0]["paper_test_error_percent"] == "0.25 +- 0.005"
    assert math.isnan(rows[1]["test_error_std"])  # one run: no spread to report


def test_missing_or_malformed_results_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ablation results in .*runs"):
        ablation.load_results(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"a.json is not a JSON ablation result"):
        ablation.load_results(tmp_path)
    (runs / "a.json").write_text(json.dumps({"variant": "capsnet-r1", "seed": 0}))
    with pytest.raises(ValueError, match=r"missing \['test_accuracy'"):
        ablation.load_results(tmp_path)


def test_an_unknown_variant_is_refused(capsys):
    with pytest.raises(SystemExit):
        ablation.build_parser().parse_args(["--variants", "resnet"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_finished_run_trained_further_is_the_longer_run(tmp_path):
    """--epochs 2 with a 1-epoch run's checkpoints resumes it: its result has both epochs' validation."""
    base = ["--variants", "capsnet-r1", "--seeds", "0", "--train-limit", "32", "--batch-size", "32"]
    base += ["--val-size", "32", "--test-limit", "32", "--threads", "1", "--no-affine"]
    base += ["--checkpoints", str(tmp_path / "checkpoints")]
    ablation.main(["--out", str(tmp_path / "one"), "--epochs", "1", *base])
    ablation.main(["--out", str(tmp_path / "two"), "--epochs", "2", *base])
    [one], [two] = ablation.load_results(tmp_path / "one"), ablation.load_results(tmp_path / "two")
    assert len(one["val_accuracy_per_epoch"]) == 1 and len(two["val_accuracy_per_epoch"]) == 2
    assert len(two["epoch_seconds"]) == 2 and two["epoch_hardware"] == [two["hardware"]] * 2
    assert two["epoch_amp"] == [False, False]
    assert two["val_accuracy_per_epoch"][0] == one["val_accuracy_per_epoch"][0]
    assert two["config"]["epochs"] == 2
    assert two["wall_seconds"] > one["wall_seconds"] > 0  # the run's wall time counts both commands


def test_table_1s_pairs_are_tested_seed_by_seed_on_the_same_images(tmp_path):
    def run(variant, seed, wrong, images=100):
        return {**fake_result(variant, seed, 0.9), "test_images": images, "test_wrong": wrong, "affine_wrong": None}

    results = [
        run("capsnet-r1-recon", 0, [1, 2, 3]),
        run("capsnet-r3-recon", 0, [3]),
        run("capsnet-r1-recon", 1, [1]),  # its r3 partner is missing: no pair
        run("capsnet-r1", 0, [1], images=50),  # tested on other images than its partner: no pair
        run("capsnet-r3", 0, [2]),
    ]
    [pair] = ablation.paired_tests(results, ablation.PAIRS)
    assert (pair["variant"], pair["against"], pair["seed"]) == ("capsnet-r1-recon", "capsnet-r3-recon", 0)
    assert (pair["test_only_this_right"], pair["test_only_reference_right"]) == (0, 2)
    assert pair["test_p_value"] == pytest.approx(0.5) and "affine_p_value" not in pair
    text = ablation.summary_markdown(ablation.summarize(results), "cmd", [pair])
    assert "| capsnet-r1-recon | capsnet-r3-recon | 0 | 0 / 2 | 0.5 | - | - |" in text
    # one run has no spread: said so, not "+- nan"
    assert "| capsnet-r3-recon | 1 | 100 | 10.00 (one run) | 0.25 +- 0.005 | 50.00 (one run) |" in text
    assert "nan" not in text


def test_a_signal_stops_the_study_with_one_line_that_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """SIGTERM during a run (fit has checkpointed it): no traceback, exit status 143, and the way on."""
    import signal

    from capslib.training.faults import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(signal.SIGTERM, "stopped at epoch 2/5, 10 of its 430 batches done; saved last.pt")

    monkeypatch.setattr(ablation, "run_variant", interrupted)
    with pytest.raises(SystemExit) as stopped:
        ablation.main(["--out", str(tmp_path), "--variants", "capsnet-r1", "--seeds", "3", "--no-affine"])
    assert stopped.value.code == 143
    err = capsys.readouterr().err
    assert "SIGTERM: stopped at epoch 2/5" in err and "capsnet-r1 seed 3 stopped" in err
    assert "Run the same command again to resume" in err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_amp_is_an_option_of_the_shared_recipe():
    """--amp (bf16 autocast where the CPU or GPU has it) reaches every run's config; off by default."""
    parser = ablation.build_parser()
    assert ablation.recipe_from(parser.parse_args(["--amp"])).amp is True
    assert ablation.recipe_from(parser.parse_args([])).amp is False


def test_status_says_which_runs_are_done_under_way_or_not_started_and_trains_nothing(tmp_path, capsys):
    base = ["--variants", "capsnet-r1", "--train-limit", "32", "--batch-size", "16", "--val-size", "32"]
    base += ["--test-limit", "32", "--threads", "1", "--no-affine", "--checkpoints", str(tmp_path / "checkpoints")]
    ablation.main(["--out", str(tmp_path / "study"), "--epochs", "1", "--seeds", "0", *base])
    ablation.main(["--out", str(tmp_path / "elsewhere"), "--epochs", "1", "--seeds", "1", *base])  # its last.pt only
    capsys.readouterr()
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    rows = ablation.main(
        ["--out", str(tmp_path / "study"), "--epochs", "2", "--seeds", "0", "1", "2", "--status", *base]
    )
    assert [row["state"] for row in rows] == ["done", "under way", "not started"]
    assert (rows[1]["epoch"], rows[1]["batches_done"], rows[1]["batches_per_epoch"]) == (2, 0, 2)
    assert [row["epochs_done"] for row in rows] == [2.0, 1.0, 0.0]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("capsnet-r1 seed 0: done, test accuracy ")
    assert lines[1] == "capsnet-r1 seed 1: under way, epoch 2 of 2, 0 of its 2 batches done"
    assert lines[2] == "capsnet-r1 seed 2: not started"
    assert lines[3].startswith("1 of 3 runs done; about ") and "(3.0 epochs at " in lines[3]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # nothing trained or written
    assert not (tmp_path / "study" / "runs" / "capsnet-r1_seed1.json").exists()
