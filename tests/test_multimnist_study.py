"""capslib.experiments.multimnist_study and capslib.analysis.separation: the iteration study reads the same
numbers as the model itself, the separation measure is what its docstring says (checked by hand), and the
CLI writes every key.

A tiny CapsNet (16 Conv1 filters, 4 capsule types of 8D, 8D digit capsules) on 36x36 pairs keeps
everything to seconds; its routing weights are scaled up so that routing actually moves.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import capslib
from capslib.analysis import separation
from capslib.analysis.routing_stats import model_prediction_vectors
from capslib.data.multimnist import pair_batch
from capslib.evaluation.accuracy import evaluate_multimnist
from capslib.experiments import multimnist_study as study
from capslib.pretrained import save_pretrained


def tiny_capsnet(seed: int = 0, vote_scale: float = 300.0) -> capslib.CapsNet:
    """A small CapsNet for 36x36 pairs whose votes are long enough for routing to move."""
    torch.manual_seed(seed)
    model = capslib.CapsNet(image_shape=(1, 36, 36), conv_channels=16, num_types=4, in_dim=8, out_dim=8)
    with torch.no_grad():
        model.digit_caps.weight.mul_(vote_scale)
    return model.eval()


@pytest.fixture(scope="module")
def digits(mnist_test_tensors):
    return mnist_test_tensors  # (10000, 1, 28, 28), (10000,)


@pytest.fixture(scope="module")
def pairs(digits):
    images, labels = digits
    return pair_batch(images[:500], labels[:500], 24, torch.Generator().manual_seed(0))  # 24 pairs


def test_iteration_r_of_one_routing_is_the_model_routed_r_times(pairs):
    model = tiny_capsnet()
    result = study.iteration_study(model, pairs, (1, 2, 4), batch_size=10, progress=False)
    assert [row["iterations"] for row in result["results"]] == [1, 2, 4]
    assert result["test_pairs"] == len(pairs)
    changed = set()
    for row in result["results"]:
        model.routing_iterations = row["iterations"]  # the model's own forward (the fused kernel on the CPU)
        own = evaluate_multimnist(model, pairs, progress=False)
        assert row["both_right"] == pytest.approx(own.both_right)
        assert row["at_least_one_right"] == pytest.approx(own.at_least_one_right)
        assert row["errors"] == round((1 - own.both_right) * len(pairs))
        assert row["iterations"] != 1 or row["gained"] == row["lost"] == 0  # the reference: the smallest count
        changed.add(tuple(own.lengths.topk(2, dim=1).indices.flatten().tolist()))
    assert len(changed) > 1, "routing must move in this model, or the comparison above proves little"


def test_separation_by_hand():
    # One pair, a 2x2 grid, one capsule type, three classes; labels A = 0, B = 1.
    ownership = torch.tensor([[[1.0, 0.0], [0.5, 0.9]]])  # positions: A, B, mixed (left out), A
    c = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5]]])  # (1, 4, 3)
    uniform = torch.full_like(c, 1 / 3)
    labels = torch.tensor([[0, 1]])
    lengths = torch.ones(1, 4)
    sums, measured = separation.separation_of_pairs([uniform, c], lengths, labels, ownership)
    assert measured.tolist() == [True]
    torch.testing.assert_close(sums[0], torch.tensor([1 / 3, 1 / 3], dtype=torch.float64))  # iteration 1: even
    # own: A's positions send 1 and 0.5 to class 0, B's sends 1 to class 1; other: all 0
    torch.testing.assert_close(sums[1], torch.tensor([2.5 / 3, 0.0], dtype=torch.float64))
    # a capsule of length 0 does not count
    sums, _ = separation.separation_of_pairs([c], torch.tensor([[1.0, 1.0, 1.0, 0.0]]), labels, ownership)
    torch.testing.assert_close(sums[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    # a pair without owned positions is left out
    _, measured = separation.separation_of_pairs([c], lengths, labels, torch.full_like(ownership, 0.5))
    assert measured.tolist() == [False]
    with pytest.raises(ValueError, match="own_share"):
        separation.separation_of_pairs([c], lengths, labels, ownership, own_share=0.5)


def test_separation_starts_at_zero_and_batches_add_up(pairs):
    model = tiny_capsnet()
    rows = study.iteration_study(model, pairs, (1, 3), batch_size=10, progress=False)["results"]  # 10 + 10 + 4
    assert rows[0]["separation"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["own_coupling"] == pytest.approx(0.1, abs=1e-6)  # 1/N_out everywhere at iteration 1
    # all 24 pairs in one go, by hand
    u, u_hat = model_prediction_vectors(model, pairs.images, return_primary=True)
    trace = capslib.dynamic_routing(u_hat, 3, return_trace=True).trace
    ownership = separation.field_ownership(pairs.first, pairs.second, (10, 10))
    sums, measured = separation.separation_of_pairs([s.c for s in trace], u.norm(dim=-1), pairs.labels, ownership)
    own, other = (sums[2] / measured.sum()).tolist()
    assert rows[1]["own_coupling"] == pytest.approx(own, abs=1e-7)  # float32 sums in another order
    assert rows[1]["separation"] == pytest.approx(own - other, abs=1e-7)
    assert abs(rows[1]["separation"]) > 1e-5  # routing moved


def test_field_weights_count_the_paths_through_two_9x9_convolutions():
    ones = torch.ones(1, 1, 9, 9)
    paths = F.conv2d(F.pad(ones, (8, 8, 8, 8)), ones)  # (1, 1, 17, 17): Conv1 after the primary kernel
    torch.testing.assert_close(separation.field_weights(), paths / paths.sum())
    assert separation.field_weights()[0, 0, 8, 8] == separation.field_weights().max()


def test_field_ownership_against_a_loop(pairs):
    first, second = pairs.first[:3], pairs.second[:3]
    share = separation.field_ownership(first, second, (10, 10))  # (3, 10, 10)
    weights = separation.field_weights()[0, 0]  # (17, 17)
    for b in range(3):
        for row, col in [(0, 0), (4, 7), (9, 9), (5, 2)]:
            window = (slice(2 * row, 2 * row + 17), slice(2 * col, 2 * col + 17))
            ink_a = float((first[b, 0][window] * weights).sum())
            ink_b = float((second[b, 0][window] * weights).sum())
            expected = ink_a / (ink_a + ink_b) if ink_a + ink_b > 1e-6 else 0.5
            assert float(share[b, row, col]) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="grid"):
        separation.field_ownership(first, second, (6, 6))


def test_coupling_difference_against_a_loop():
    generator = torch.Generator().manual_seed(0)
    c = torch.softmax(torch.randn(2, 3 * 2 * 2, 5, generator=generator), dim=2)  # (B, T*H'*W', N_out)
    lengths = torch.rand(2, 12, generator=generator)  # (B, N_in)
    labels = torch.tensor([[1, 3], [4, 0]])
    got = separation.coupling_difference(c, lengths, labels, (2, 2))  # (2, 2, 2)
    for b in range(2):
        a, other = labels[b].tolist()
        for row in range(2):
            for col in range(2):
                capsules = [t * 4 + row * 2 + col for t in range(3)]  # n = t H'W' + row W' + col
                w = lengths[b, capsules]
                expected = (w * (c[b, capsules, a] - c[b, capsules, other])).sum() / w.sum()
                assert float(got[b, row, col]) == pytest.approx(float(expected), abs=1e-6)


def test_pair_coupling_is_even_at_iteration_one_and_matches_the_model(pairs):
    model = tiny_capsnet()
    maps = separation.pair_coupling(model, pairs.images[0], pairs.labels[0], iterations=3)
    assert maps["difference"].shape == (3, 10, 10) and maps["lengths"].shape == (3, 10)
    assert maps["difference"][0].abs().max() < 1e-6  # c = 1/N_out: every position splits evenly
    assert maps["difference"][2].abs().max() > 1e-3
    model.routing_iterations = 3
    with torch.no_grad():
        torch.testing.assert_close(maps["lengths"][-1], model(pairs.images[:1]).lengths[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "top, labels, expected",
    [
        ((7, 2), (2, 7), (2, 7)),  # both right, longest second
        ((2, 7), (2, 7), (2, 7)),
        ((7, 3), (2, 7), (3, 7)),  # one right: it keeps its slot
        ((3, 2), (2, 7), (2, 3)),
        ((5, 4), (2, 7), (5, 4)),  # none right: longest first
    ],
)
def test_predicted_pairs_line_up_with_the_labels(top, labels, expected):
    lengths = torch.zeros(1, 10)
    lengths[0, top[0]], lengths[0, top[1]] = 0.9, 0.8
    assert separation.predicted_pairs(lengths, torch.tensor([labels])).tolist() == [list(expected)]


def test_reconstruct_predicted_masks_each_predicted_digit(pairs):
    model = tiny_capsnet()
    drawn = separation.reconstruct_predicted(model, pairs.images[:4], pairs.labels[:4])
    assert drawn["reconstructions"].shape == (4, 2, 1, 36, 36)
    with torch.no_grad():
        expected = model(pairs.images[:4], drawn["predicted"]).reconstructions  # (4, 2, 1, 36, 36)
    torch.testing.assert_close(drawn["reconstructions"], expected)
    assert sorted(drawn["predicted"][0].tolist()) == sorted(drawn["lengths"][0].topk(2).indices.tolist())


@pytest.fixture
def shipped_tiny(tmp_path, monkeypatch):
    """A data folder holding MNIST (linked) and a tiny model shipped as ``tiny_multimnist``."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist").symlink_to(capslib.data.data_dir() / "mnist", target_is_directory=True)
    model = tiny_capsnet(vote_scale=1.0)
    save_pretrained(model, data / "pretrained", {"name": "tiny_multimnist"}, name="tiny_multimnist")
    monkeypatch.setenv("CAPSNET_DATA", str(data))
    return capslib.load_pretrained("cpu", name="tiny_multimnist")


def test_cli_writes_every_key_and_the_numbers_of_evaluate(tmp_path, shipped_tiny, digits):
    out = tmp_path / "results" / "study.json"
    argv = ["--out", str(out), "--name", "tiny_multimnist", "--iterations", "3", "1", "--test-limit", "20"]
    study.main([*argv, "--no-progress", "--batch-size", "8"])
    record = study.load_iteration_study(out)
    for key in (*study.REQUIRED_KEYS, "trained_iterations", "test_set", "separation_definition", "torch_version"):
        assert key in record, key
    assert record["iterations"] == [1, 3] and [row["iterations"] for row in record["results"]] == [1, 3]
    assert record["test_pairs"] == 20 and "--test-limit 20" in record["command"]
    assert record["command"].startswith("python -m capslib.multimnist_study")
    assert record["hardware"] and record["seconds"] >= 0
    from capslib.data.multimnist import multimnist_test_set

    fixed = multimnist_test_set(*digits)  # the first 20 of the fixed test pairs
    first = study.subset(fixed, slice(0, 20))
    shipped_tiny.routing_iterations = 3
    own = evaluate_multimnist(shipped_tiny, first, progress=False)
    assert record["results"][1]["both_right"] == pytest.approx(own.both_right)
    assert record["results"][1]["at_least_one_right"] == pytest.approx(own.at_least_one_right)
    assert not list(out.parent.glob(".*.tmp")), "the atomic write left a temporary file"


def test_load_errors_say_what_is_wrong(tmp_path):
    missing = tmp_path / "nothing.json"
    with pytest.raises(FileNotFoundError, match="python -m capslib.multimnist_study --out"):
        study.load_iteration_study(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        study.load_iteration_study(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        study.load_iteration_study(bad)
    row = {"iterations": 1, "both_right": 0.5, "errors": 5, "gained": 0, "lost": 0, "separation": 0.0}
    partial = {"name": "x", "test_pairs": 10, "reference": 1, "results": [row]}
    bad.write_text(json.dumps(partial))
    with pytest.raises(ValueError, match=r"\['iterations', 'command', 'hardware', 'seconds'\]"):
        study.load_iteration_study(bad)
    complete = {**partial, "iterations": [1], "command": "c", "hardware": "h", "seconds": 1.0}
    bad.write_text(json.dumps(complete))
    with pytest.raises(ValueError, match=r"row 0 .*\['at_least_one_right'\]"):
        study.load_iteration_study(bad)
    complete["results"][0]["at_least_one_right"] = 0.9
    bad.write_text(json.dumps(complete))
    assert study.load_iteration_study(bad)["results"][0]["both_right"] == 0.5
    complete["results"] = []
    bad.write_text(json.dumps(complete))
    with pytest.raises(ValueError, match="non-empty list"):
        study.load_iteration_study(bad)


def test_bad_arguments_are_refused(pairs):
    model = tiny_capsnet()
    with pytest.raises(ValueError, match="iterations"):
        study.iteration_study(model, pairs, (0, 3), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        study.iteration_study(model, pairs, (3,), batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"labels \(B, 2\)"):
        separation.coupling_difference(torch.rand(1, 400, 10), torch.rand(1, 400), torch.tensor([1, 2]), (10, 10))


def test_gained_and_lost_compare_the_same_pairs_with_the_reference(pairs):
    model = tiny_capsnet()
    result = study.iteration_study(model, pairs, (1, 3, 5), progress=False)
    assert result["reference"] == 3  # the model's own routing_iterations
    rows = {row["iterations"]: row for row in result["results"]}
    for row in rows.values():
        # errors here = errors at the reference - pairs gained + pairs lost
        assert row["errors"] == rows[3]["errors"] - row["gained"] + row["lost"]
    assert rows[3]["gained"] == rows[3]["lost"] == 0
    assert sum(row["gained"] + row["lost"] for row in rows.values()) > 0, "no answer changed: the check above is empty"
    assert study.iteration_study(model, pairs, (1, 2), progress=False)["reference"] == 1
    with pytest.raises(ValueError, match="reference"):
        study.iteration_study(model, pairs, (1, 2), reference=3, progress=False)
