"""The same votes through every routing algorithm (notebook 11): route_every_way and its figure."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import capslib  # noqa: E402
from capslib.analysis.routing_lab import route_every_way, synthetic_votes  # noqa: E402
from capslib.plots import plot_routing_algorithms  # noqa: E402


@pytest.fixture(scope="module")
def votes():
    return synthetic_votes(num_out=2, cluster_size=6, num_scattered=12, noise=0.2, seed=1)


def test_every_algorithm_routes_the_same_votes_with_its_trace(votes):
    u_hat, _ = votes
    results = route_every_way(u_hat, iterations=3)
    assert list(results) == list(capslib.ROUTING_ALGORITHMS)
    assert [len(r.trace) for r in results.values()] == [3, 1, 1, 3]  # dynamic and em iterate
    for name, result in results.items():
        assert torch.equal(result.u_hat, u_hat), name
        c = result.trace[-1].c  # (1, N_in, N_out)
        torch.testing.assert_close(c.sum(dim=-1), torch.ones(1, u_hat.shape[1]))  # over the outputs
        v, coupling = capslib.ROUTING_ALGORITHMS[name](u_hat, 3)
        torch.testing.assert_close(result.trace[-1].c, coupling)  # the trace ends where the plain call does
    assert torch.all(results["uniform"].trace[0].c == 0.5)


def test_options_reach_their_algorithm_and_strays_are_refused(votes):
    u_hat, _ = votes
    hot = route_every_way(u_hat, 3, ["em"], em={"inverse_temperature": 10.0})["em"]
    cold = route_every_way(u_hat, 3, ["em"], em={"inverse_temperature": 0.01})["em"]
    assert not torch.allclose(hot.activations, cold.activations)
    with pytest.raises(ValueError, match="not among the algorithms"):
        route_every_way(u_hat, 3, ["dynamic"], em={"inverse_temperature": 1.0})
    with pytest.raises(ValueError, match="routing"):
        route_every_way(u_hat, 3, ["magic"])


def test_the_figure_has_a_panel_per_algorithm_on_one_fixed_scale(votes):
    u_hat, membership = votes
    results = route_every_way(u_hat, iterations=3)
    fig = plot_routing_algorithms(results, 2, membership)
    try:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert len(panels) == len(results) + 1
        assert "one pass" in panels[2].get_title() and "iteration 2 of 3" in panels[0].get_title()
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)  # fixed, never fitted
        limits = [ax.get_xlim() for ax in panels[:-1]]
        other = plot_routing_algorithms(results, 3, membership)
        assert [ax.get_xlim() for ax in other.axes if ax.get_label() != "<colorbar>"][:-1] == limits
        plt.close(other)
    finally:
        plt.close(fig)


def test_the_figure_refuses_what_it_cannot_draw(votes):
    u_hat, membership = votes
    results = route_every_way(u_hat, iterations=3)
    with pytest.raises(ValueError, match=r"iteration must be an integer in \[1, 3\]"):
        plot_routing_algorithms(results, 4, membership)
    with pytest.raises(ValueError, match="at least one"):
        plot_routing_algorithms({}, 1)
    other = route_every_way(synthetic_votes(seed=5)[0], 3, ["uniform"])
    with pytest.raises(ValueError, match="same votes"):
        plot_routing_algorithms({**results, "other": other["uniform"]}, 1)
    with pytest.raises(ValueError, match="membership"):
        plot_routing_algorithms(results, 1, membership[:3])
