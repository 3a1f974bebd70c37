"""capslib.analysis.routing_stats: the measurements of how far routing moves are right and honest."""

from __future__ import annotations

import math

import pytest
import torch

from capslib import CapsNet, EfficientCapsNet, dynamic_routing, squash
from capslib.analysis.routing_stats import (
    STATISTICS_COLUMNS,
    model_prediction_vectors,
    predictions_by_iterations,
    routing_statistics,
    routing_statistics_of_images,
    trace_values,
)


def clustered_votes(batch: int = 2, num_in: int = 60, num_out: int = 3, dim: int = 4, seed: int = 0) -> torch.Tensor:
    """Votes ``(B, N_in, N_out, D)``: for output 0 half of the inputs agree on one direction."""
    g = torch.Generator().manual_seed(seed)
    u_hat = 0.05 * torch.randn(batch, num_in, num_out, dim, generator=g, dtype=torch.float64)
    u_hat[:, : num_in // 2, 0] += 0.1 * torch.nn.functional.normalize(torch.ones(dim, dtype=torch.float64), dim=0)
    return u_hat


@pytest.fixture(scope="module")
def small_model() -> CapsNet:
    torch.manual_seed(0)
    model = CapsNet(conv_channels=16, num_types=4, in_dim=6, out_dim=7).eval()
    with torch.no_grad():
        model.digit_caps.weight.mul_(30.0)  # a fresh init routes almost uniformly
    return model


def test_scale_zero_keeps_the_coupling_uniform_and_larger_scales_polarise_it():
    u_hat = clustered_votes()
    flat = dynamic_routing(u_hat, iterations=5, return_trace=True, agreement_scale=0)
    for step in flat.trace:
        torch.testing.assert_close(step.c, torch.full_like(step.c, 1 / 3))
    entropies = [routing_statistics(u_hat, 5, scale).column("entropy of c")[-1] for scale in (0, 1, 10, 100)]
    assert entropies[0] == pytest.approx(math.log(3))
    assert all(a > b for a, b in zip(entropies, entropies[1:], strict=False)), entropies
    assert "not the paper" in routing_statistics(u_hat, 2, 10).caption
    assert "not the paper" not in routing_statistics(u_hat, 2, 1.0).caption


def test_trace_values_follow_procedure_1():
    u_hat = clustered_votes()
    result = dynamic_routing(u_hat, iterations=4, return_trace=True)
    table = trace_values(result, input_capsule=3, output_capsule=0, example=1)
    b, c, agreement = table.column("b_ij"), table.column("c_ij"), table.column("agreement")
    assert table.column("iteration") == [1, 2, 3, 4]
    assert b[0] == 0 and c[0] == pytest.approx(1 / 3)
    for r in range(3):  # the logit of the next iteration is this one's plus its agreement
        assert b[r + 1] == pytest.approx(b[r] + agreement[r], abs=1e-12)
    for r, step in enumerate(result.trace):
        assert c[r] == pytest.approx(float(torch.softmax(step.b[1, 3], dim=0)[0]))
        s_len = table.column("|s_j|")[r]
        assert table.column("|v_j|")[r] == pytest.approx(float(squash(step.s[1, 0], dim=-1).norm()))
        assert s_len == pytest.approx(float(step.s[1, 0].norm()))
    assert "i=3" in table.caption and "j=0" in str(table) and "<table>" in table._repr_html_()


def test_statistics_start_uniform_and_name_the_winner():
    u_hat = clustered_votes()
    table = routing_statistics(u_hat, iterations=3)
    assert table.columns == STATISTICS_COLUMNS and len(table) == 3
    first = dict(zip(table.columns, table.rows[0], strict=True))
    assert first["c winner"] == pytest.approx(1 / 3) and first["max c"] == pytest.approx(1 / 3)
    assert first["entropy of c"] == pytest.approx(math.log(3))
    # output 0 gets the agreeing cluster: it wins, its coupling and agreement grow
    assert table.column("c winner")[-1] > 1 / 3
    assert table.column("agreement winner")[0] > table.column("agreement others")[0]
    assert table.column("|s| winner")[0] > table.column("|s| others")[0]
    # iteration 1's s is the SUM of the votes divided by N_out, not their average
    s = u_hat.sum(dim=1) / 3  # (B, N_out, D)
    winner_lengths = s[:, 0].norm(dim=-1)  # (B,)
    assert first["|s| winner"] == pytest.approx(float(winner_lengths.mean()))


def test_statistics_of_images_equal_one_big_batch(small_model):
    images = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    whole = routing_statistics(model_prediction_vectors(small_model, images), iterations=3)
    batched = routing_statistics_of_images(small_model, images, iterations=3, batch_size=3, progress=False)
    for mine, theirs in zip(batched.rows, whole.rows, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-7)
    assert batched.caption == whole.caption


def test_prediction_vectors_are_what_the_model_routes(small_model):
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = small_model(images, return_trace=True)
    torch.testing.assert_close(model_prediction_vectors(small_model, images), out.u_hat)


def test_prediction_vectors_of_an_efficient_capsnet_are_what_it_routes():
    """The votes come from the model's own primary_capsules, not from CapsNet's conv1 (which
    Efficient-CapsNet does not have)."""
    torch.manual_seed(0)
    model = EfficientCapsNet(routing="dynamic").eval()
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(images, return_trace=True)
    u, u_hat = model_prediction_vectors(model, images, return_primary=True)
    assert u.shape == (2, 16, 8) and u_hat.shape == (2, 16, 10, 16)
    torch.testing.assert_close(u_hat, out.u_hat)


def test_predictions_by_iterations_match_the_model_routing_that_many_times(small_model):
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    found = predictions_by_iterations(small_model, images, iterations=(1, 4), batch_size=2, progress=False)
    assert set(found) == {1, 4}
    for r in (1, 4):
        small_model.routing_iterations = r
        with torch.no_grad():
            expected = small_model(images).predictions
        assert torch.equal(found[r], expected.cpu())
    small_model.routing_iterations = 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda u: routing_statistics(u, 3, -1.0), "agreement_scale must be a finite number >= 0"),
        (lambda u: routing_statistics(u, 3, float("nan")), "agreement_scale"),
        (lambda u: routing_statistics(u, 0, 1.0), "iterations must be an integer >= 1"),
        (lambda u: routing_statistics(u[0], 3, 1.0), r"u_hat must have shape \(B, N_in, N_out, D_out\)"),
        (lambda u: trace_values(dynamic_routing(u, 2, return_trace=True), 60, 0), r"input_capsule must lie in \[0, 60"),
        (lambda u: trace_values(dynamic_routing(u, 2, return_trace=True), 0, 3), r"output_capsule must lie in \[0, 3"),
    ],
)
def test_bad_input_says_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call(clustered_votes())


def test_bad_batches_and_iteration_lists_are_refused(small_model):
    images = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        predictions_by_iterations(small_model, images, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="at least one iteration count"):
        predictions_by_iterations(small_model, images, iterations=(), progress=False)
    with pytest.raises(ValueError, match="no images"):
        routing_statistics_of_images(small_model, images[:0], progress=False)
