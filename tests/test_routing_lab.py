"""The routing lab's synthetic votes: shapes, the recipe they promise, errors, and that routing finds
the clusters (or, with very short votes, cannot move)."""

from __future__ import annotations

import pytest
import torch

import capslib
from capslib.analysis.routing_lab import cluster_coupling, synthetic_votes


def test_shapes_lengths_and_membership():
    u_hat, membership = synthetic_votes(num_out=3, dim=2, cluster_size=4, num_scattered=5, vote_length=0.7, seed=3)
    assert u_hat.shape == (1, 3 * 4 + 5, 3, 2)  # (1, N_in, N_out, D)
    assert membership.dtype == torch.long and membership.shape == (17,)
    assert membership.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [-1] * 5
    torch.testing.assert_close(torch.linalg.vector_norm(u_hat, dim=-1), torch.full((1, 17, 3), 0.7))


def test_noise_free_clusters_agree_exactly_and_seeds_repeat():
    u_hat, membership = synthetic_votes(num_out=2, dim=3, cluster_size=5, noise=0.0, seed=1)
    for j in range(2):
        votes = u_hat[0, membership == j, j]  # (cluster_size, D): all the same vote
        torch.testing.assert_close(votes, votes[:1].expand_as(votes))
    again, _ = synthetic_votes(num_out=2, dim=3, cluster_size=5, noise=0.0, seed=1)
    assert torch.equal(u_hat, again)
    other, _ = synthetic_votes(num_out=2, dim=3, cluster_size=5, noise=0.0, seed=2)
    assert not torch.equal(u_hat, other)


def test_routing_couples_each_cluster_to_its_output():
    u_hat, membership = synthetic_votes(num_out=2, cluster_size=6, num_scattered=12, noise=0.2, seed=1)
    result = capslib.dynamic_routing(u_hat, iterations=6, return_trace=True)
    first = cluster_coupling(result.trace[0].c[0], membership)  # (N_out,)
    last = cluster_coupling(result.trace[-1].c[0], membership)
    torch.testing.assert_close(first, torch.full((2,), 0.5))  # iteration 1: uniform
    assert (last > 0.8).all(), last


def test_short_votes_hardly_move_the_coupling():
    """|s| small -> squash shrinks v quadratically -> tiny agreement -> c stays near 1/N_out."""
    u_hat, membership = synthetic_votes(cluster_size=6, num_scattered=12, noise=0.2, vote_length=0.05, seed=1)
    result = capslib.dynamic_routing(u_hat, iterations=6, return_trace=True)
    assert (cluster_coupling(result.c[0], membership) - 0.5).abs().max() < 0.01


def test_one_output_capsule_gets_every_vote():
    u_hat, _ = synthetic_votes(num_out=1, cluster_size=3, num_scattered=4)
    _, c = capslib.dynamic_routing(u_hat, iterations=3)  # (1, N_in, 1)
    assert torch.equal(c, torch.ones_like(c))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_out=0), r"num_out must be an integer >= 1, got 0"),
        (dict(dim=1), r"dim must be an integer >= 2, got 1"),
        (dict(cluster_size=2.5), r"cluster_size must be an integer >= 1, got 2.5"),
        (dict(num_scattered=-1), r"num_scattered must be an integer >= 0, got -1"),
        (dict(noise=-0.1), r"noise must be a finite number >= 0, got -0.1"),
        (dict(vote_length=0.0), r"vote_length must be a finite number > 0, got 0.0"),
        (dict(vote_length=float("inf")), r"vote_length must be a finite number > 0, got inf"),
        (dict(seed=True), r"seed must be an integer >= 0, got True"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_votes(**kwargs)


def test_cluster_coupling_checks_shapes():
    with pytest.raises(ValueError, match=r"expected coupling \(N_in, N_out\) and membership \(N_in,\)"):
        cluster_coupling(torch.rand(1, 5, 2), torch.zeros(5, dtype=torch.long))
