"""Explaining away in the routing lab: one ambiguous part between two wholes, and the coupling
shift measured on real capsules. Routing must leave the part undecided when both wholes are
equally supported (by symmetry), and move it towards the better-supported whole otherwise."""

from __future__ import annotations

import matplotlib
import pytest
import torch

import capslib
from capslib import plots
from capslib.analysis.routing_lab import (
    coupling_history,
    coupling_shift,
    explaining_away_votes,
    routing_shift_of_images,
)

matplotlib.use("Agg")


def routed(parts_a, parts_b, ambiguity=10.0, iterations=6, **kwargs):
    u_hat, roles = explaining_away_votes(parts_a, parts_b, ambiguity, **kwargs)
    return capslib.dynamic_routing(u_hat, iterations=iterations, return_trace=True), roles


def test_shapes_roles_and_lengths():
    u_hat, roles = explaining_away_votes(parts_a=3, parts_b=2, vote_length=0.5)
    assert u_hat.shape == (1, 6, 2, 2)  # (1, N_in, N_out, D)
    assert roles.tolist() == [-1, 0, 0, 0, 1, 1]
    torch.testing.assert_close(torch.linalg.vector_norm(u_hat, dim=-1), torch.full((1, 6, 2), 0.5))


def test_ambiguous_part_fits_both_wholes_equally():
    """Its vote for each whole lies `ambiguity` degrees off that whole's agreeing direction."""
    u_hat, _ = explaining_away_votes(parts_a=2, parts_b=2, ambiguity=30.0, spread=0.0)
    part = u_hat[0, 0]  # (2 wholes, 2)
    torch.testing.assert_close(part[0], part[1])
    supporter = u_hat[0, 1, 0]  # a part of A, its vote for A (spread 0: the whole's direction)
    cosine = torch.dot(part[0], supporter)
    torch.testing.assert_close(cosine, torch.cos(torch.deg2rad(torch.tensor(30.0))))


@pytest.mark.parametrize("parts", [0, 1, 3, 6])
@pytest.mark.parametrize("ambiguity", [0.0, 25.0, 80.0])
def test_equal_support_leaves_the_part_undecided(parts, ambiguity):
    result, _ = routed(parts, parts, ambiguity, iterations=10)
    history = coupling_history(result)  # (R, 2)
    torch.testing.assert_close(history, torch.full_like(history, 0.5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("parts_a, parts_b, spread", [(4, 1, 20.0), (3, 0, 5.0), (6, 2, 40.0)])
def test_more_support_for_a_moves_the_part_to_a_monotonically(parts_a, parts_b, spread):
    result, _ = routed(parts_a, parts_b, iterations=8, spread=spread)
    to_a = coupling_history(result)[:, 0]  # (R,)
    assert to_a[0] == pytest.approx(0.5)
    assert (to_a[1:] > to_a[:-1]).all(), to_a
    assert to_a[-1] > 0.9, to_a
    mirrored, _ = routed(parts_b, parts_a, iterations=8, spread=spread)  # the same story, the other way round
    torch.testing.assert_close(coupling_history(mirrored)[:, 1], to_a, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ambiguity", [0.0, 10.0, 45.0])
def test_more_parts_for_a_move_the_part_further(ambiguity):
    finals = [float(coupling_history(routed(k, 1, ambiguity)[0])[-1, 0]) for k in range(9)]
    assert finals[1] == pytest.approx(0.5, abs=1e-5)  # 1 against 1: undecided
    assert finals[0] < 0.5  # no part for A: the part goes to B
    assert all(a < b for a, b in zip(finals, finals[1:], strict=False)), finals


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(parts_a=-1), r"parts_a must be an integer >= 0, got -1"),
        (dict(parts_b=1.5), r"parts_b must be an integer >= 0, got 1.5"),
        (dict(ambiguity=-5.0), r"ambiguity must be a finite number >= 0, got -5.0"),
        (dict(ambiguity=200.0), r"ambiguity must be an angle in \[0, 180\] degrees, got 200.0"),
        (dict(spread=float("nan")), r"spread must be a finite number >= 0, got nan"),
        (dict(vote_length=0), r"vote_length must be a finite number > 0, got 0"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        explaining_away_votes(**kwargs)


def test_coupling_history_checks_its_arguments():
    result, _ = routed(2, 1, iterations=3)
    assert coupling_history(result, input_capsule=3).shape == (3, 2)
    with pytest.raises(ValueError, match=r"input_capsule must be an integer in \[0, 3\], got 4"):
        coupling_history(result, input_capsule=4)
    with pytest.raises(ValueError, match="with a trace"):
        coupling_history(capslib.dynamic_routing(torch.randn(1, 4, 2, 2), iterations=2, return_trace=False))


def test_coupling_shift_is_winner_minus_runner_up():
    coupling = torch.tensor([[[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]])  # (B=1, N_in=2, N_out=3)
    lengths = torch.tensor([[0.9, 0.1, 0.5]])  # winner 0, runner-up 2
    shift = coupling_shift(coupling, lengths)
    assert shift["winner"].tolist() == [0] and shift["runner_up"].tolist() == [2]
    torch.testing.assert_close(shift["per_capsule"], torch.tensor([[0.6, -0.1]]))
    torch.testing.assert_close(shift["mean"], torch.tensor([0.25]))
    torch.testing.assert_close(shift["largest"], torch.tensor([0.6]))
    with pytest.raises(ValueError, match=r"expected coupling \(B, N_in, N_out\) and lengths \(B, N_out\)"):
        coupling_shift(coupling, lengths[:, :2])


def test_uniform_coupling_shifts_nothing():
    u_hat = torch.randn(3, 20, 4, 5)
    v, c = capslib.dynamic_routing(u_hat, iterations=1)
    shift = coupling_shift(c, torch.linalg.vector_norm(v, dim=-1))
    assert torch.equal(shift["mean"], torch.zeros(3))


class _TinyCapsNet(torch.nn.Module):
    """What model_prediction_vectors needs (primary capsules and a routing layer), tiny and random."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(1, 4, 5)
        self.primary_caps = lambda x: capslib.squash(x.flatten(2).transpose(1, 2)[:, :, :4], dim=-1)  # (B, 16, 4)
        self.digit_caps = capslib.RoutingCaps(in_capsules=16, in_dim=4, out_capsules=3, out_dim=5)

    def check_images(self, images):
        pass

    def primary_capsules(self, images):
        return self.primary_caps(torch.relu(self.conv1(images)))  # (B, 16, 4)


def test_routing_shift_of_images_matches_routing_each_count():
    model = _TinyCapsNet()
    images = torch.rand(5, 1, 8, 8)
    found = routing_shift_of_images(model, images, iterations=(1, 2, 4), shift_at=3, batch_size=2)
    from capslib.analysis.routing_stats import model_prediction_vectors

    u_hat = model_prediction_vectors(model, images)  # (5, 16, 3, 5)
    for r in (1, 2, 4):
        v, _ = capslib.dynamic_routing(u_hat, iterations=r)
        assert torch.equal(found["predictions"][r], torch.linalg.vector_norm(v, dim=-1).argmax(dim=1))
    v, c = capslib.dynamic_routing(u_hat, iterations=3)
    expected = coupling_shift(c, torch.linalg.vector_norm(v, dim=-1))
    for key in ("winner", "runner_up", "per_capsule", "mean", "largest"):
        torch.testing.assert_close(found[key], expected[key])
    with pytest.raises(ValueError, match="at least one iteration count"):
        routing_shift_of_images(model, images, iterations=())


def test_the_plots_draw_and_check_their_input():
    result, roles = routed(3, 1, iterations=4)
    fig = plots.plot_explaining_away(result, 2, roles, title="test")
    assert len(fig.axes) == 4  # two wholes, the history, the colour bar
    with pytest.raises(ValueError, match=r"iteration must be an integer in \[1, 4\], got 5"):
        plots.plot_explaining_away(result, 5, roles)
    with pytest.raises(ValueError, match="exactly one -1"):
        plots.plot_explaining_away(result, 1, torch.zeros(5, dtype=torch.long))
    fig = plots.plot_routing_shift(torch.rand(2, 1, 28, 28), torch.randn(2, 1152) * 0.01, captions=["a", "b"])
    assert len(fig.axes) == 5
    with pytest.raises(ValueError, match="expected shifts"):
        plots.plot_routing_shift(torch.rand(2, 1, 28, 28), torch.randn(3, 1152))
    matplotlib.pyplot.close("all")
