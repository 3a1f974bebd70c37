"""The routing algorithms of ``capslib.ROUTING_ALGORITHMS`` against loop-by-loop references written
from their papers, for batch independence, for their couplings, and for bad input."""

from __future__ import annotations

import math

import pytest
import torch

import capslib
from capslib.functional import efficient_squash, squash
from capslib.routing_algorithms import (
    ROUTING_ALGORITHMS,
    check_routing_algorithm,
    em_routing,
    self_attention_routing,
    uniform_routing,
)

B, N_IN, N_OUT, D = 3, 5, 4, 3


def votes(seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(B, N_IN, N_OUT, D, generator=generator, dtype=torch.float64)


# --- references, one number at a time ---------------------------------------------------------------


def squash_one(s: list[float]) -> list[float]:
    n2 = sum(x * x for x in s)
    return [x * math.sqrt(n2) / (1 + n2) for x in s]


def efficient_squash_one(s: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in s))
    return [0.0 for _ in s] if n == 0 else [x * (1 - math.exp(-n)) / n for x in s]


def self_attention_reference(u_hat, prior=None, scale=None):
    """Mazzia et al. 2021, Eqs. of Section 3.2 as the released code computes them: for each output
    j the attention matrix A_j = U_j U_j^T / scale, b_ij its row sums, c = softmax over j,
    s_j = sum_i (c_ij + B_ij) u_hat_j|i, v_j = squash(s_j), one number at a time."""
    batch, n_in, n_out, dim = u_hat.shape
    scale = math.sqrt(dim) if scale is None else scale
    v = torch.zeros(batch, n_out, dim, dtype=u_hat.dtype)
    c = torch.zeros(batch, n_in, n_out, dtype=u_hat.dtype)
    for b in range(batch):
        logits = [[0.0] * n_out for _ in range(n_in)]
        for j in range(n_out):
            for i in range(n_in):
                row = 0.0
                for k in range(n_in):
                    row += sum(float(u_hat[b, i, j, d] * u_hat[b, k, j, d]) for d in range(dim)) / scale
                logits[i][j] = row
        for i in range(n_in):
            top = max(logits[i])
            e = [math.exp(x - top) for x in logits[i]]
            for j in range(n_out):
                c[b, i, j] = e[j] / sum(e)
        for j in range(n_out):
            s = [0.0] * dim
            for i in range(n_in):
                w = float(c[b, i, j]) + (0.0 if prior is None else float(prior[i, j]))
                for d in range(dim):
                    s[d] += w * float(u_hat[b, i, j, d])
            v[b, j] = torch.tensor(efficient_squash_one(s), dtype=u_hat.dtype)
    return v, c


def em_reference(u_hat, iterations, activations, beta_u, beta_a, lambdas, eps=1e-6):
    """Hinton, Sabour & Frosst 2018, Procedure 1 (M-step, then E-step, R initialised to 1/N_out),
    one number at a time, for one example; v_j = a_j mu_j / |mu_j|."""
    n_in, n_out, dim = u_hat.shape
    R = [[1.0 / n_out] * n_out for _ in range(n_in)]
    for t in range(iterations):
        used = [row[:] for row in R]
        mu, var, a = [], [], []
        for j in range(n_out):
            rj = [R[i][j] * activations[i] for i in range(n_in)]
            mass = sum(rj) + eps
            m = [sum(rj[i] * float(u_hat[i, j, h]) for i in range(n_in)) / mass for h in range(dim)]
            s2 = [
                sum(rj[i] * (float(u_hat[i, j, h]) - m[h]) ** 2 for i in range(n_in)) / mass + eps for h in range(dim)
            ]
            cost = sum((beta_u + math.log(math.sqrt(s2[h]))) * mass for h in range(dim))
            a.append(1 / (1 + math.exp(-lambdas[t] * (beta_a - cost))))
            mu.append(m)
            var.append(s2)
        if t < iterations - 1:
            for i in range(n_in):
                p = []
                for j in range(n_out):
                    density = 1.0
                    for h in range(dim):
                        x = float(u_hat[i, j, h])
                        density *= math.exp(-((x - mu[j][h]) ** 2) / (2 * var[j][h])) / math.sqrt(
                            2 * math.pi * var[j][h]
                        )
                    p.append(a[j] * density)
                R[i] = [pj / sum(p) for pj in p]
    v = []
    for j in range(n_out):
        norm = math.sqrt(sum(x * x for x in mu[j]))
        v.append([a[j] * x / max(norm, eps) for x in mu[j]])
    return torch.tensor(v, dtype=u_hat.dtype), torch.tensor(used, dtype=u_hat.dtype), torch.tensor(a, dtype=u_hat.dtype)


# --- the table --------------------------------------------------------------------------------------


def test_the_table_holds_the_four_algorithms_and_names_are_checked():
    assert list(ROUTING_ALGORITHMS) == ["dynamic", "uniform", "self_attention", "em"]
    assert ROUTING_ALGORITHMS["dynamic"] is capslib.dynamic_routing
    assert capslib.ROUTING_ALGORITHMS is ROUTING_ALGORITHMS
    assert check_routing_algorithm("em") == "em"
    with pytest.raises(ValueError, match="routing must be one of .*'dynamic'.*got 'Dynamic'"):
        check_routing_algorithm("Dynamic")


@pytest.mark.parametrize("name", list(ROUTING_ALGORITHMS))
def test_every_algorithm_has_one_signature_and_couplings_that_sum_to_one_over_the_outputs(name):
    u_hat = votes()
    v, c = ROUTING_ALGORITHMS[name](u_hat, 3)
    assert v.shape == (B, N_OUT, D) and c.shape == (B, N_IN, N_OUT)
    torch.testing.assert_close(c.sum(dim=2), torch.ones(B, N_IN, dtype=u_hat.dtype))
    assert torch.isfinite(v).all() and (torch.linalg.vector_norm(v, dim=-1) < 1).all()
    traced = ROUTING_ALGORITHMS[name](u_hat, 3, return_trace=True)
    assert isinstance(traced, capslib.RoutingResult)
    assert len(traced.trace) == (3 if name in ("dynamic", "em") else 1)
    torch.testing.assert_close(traced.v, v)
    torch.testing.assert_close(traced.c, c)


@pytest.mark.parametrize("name", list(ROUTING_ALGORITHMS))
def test_every_example_routes_on_its_own(name):
    u_hat = votes(1)
    v, c = ROUTING_ALGORITHMS[name](u_hat, 3)
    for b in range(B):
        v_b, c_b = ROUTING_ALGORITHMS[name](u_hat[b : b + 1], 3)
        torch.testing.assert_close(v_b[0], v[b])
        torch.testing.assert_close(c_b[0], c[b])


@pytest.mark.parametrize("name", list(ROUTING_ALGORITHMS))
def test_zero_votes_give_zero_capsules_not_nan(name):
    u_hat = torch.zeros(2, N_IN, N_OUT, D, requires_grad=True)
    v, c = ROUTING_ALGORITHMS[name](u_hat, 3)
    assert torch.isfinite(v).all() and torch.isfinite(c).all()
    v.sum().backward()
    assert torch.isfinite(u_hat.grad).all()


@pytest.mark.parametrize("name", list(ROUTING_ALGORITHMS))
@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(2, 3, 4), r"u_hat must have shape \(B, N_in, N_out, D_out\), got \(2, 3, 4\)"),
        ("votes", r"u_hat must have shape \(B, N_in, N_out, D_out\), got str"),
    ],
)
def test_bad_votes_are_a_clear_value_error(name, bad, message):
    with pytest.raises(ValueError, match=message):
        ROUTING_ALGORITHMS[name](bad, 3)


@pytest.mark.parametrize("name", list(ROUTING_ALGORITHMS))
@pytest.mark.parametrize("iterations", [0, -1, 2.5, True])
def test_bad_iterations_are_a_clear_value_error(name, iterations):
    with pytest.raises(ValueError, match="routing iterations must be an integer >= 1"):
        ROUTING_ALGORITHMS[name](votes(), iterations)


@pytest.mark.parametrize("name", list(ROUTING_ALGORITHMS))
def test_under_autocast_every_algorithm_routes_in_float32(name):
    u_hat = votes().float()
    expected_v, expected_c = ROUTING_ALGORITHMS[name](u_hat, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v, c = ROUTING_ALGORITHMS[name](u_hat.bfloat16(), 3)
    assert v.dtype == torch.float32 and c.dtype == torch.float32
    torch.testing.assert_close(v, expected_v, atol=0.05, rtol=0.05)


# --- uniform ----------------------------------------------------------------------------------------


def test_uniform_routing_is_dynamic_routing_with_one_iteration_whatever_it_is_asked():
    u_hat = votes(2)
    v1, c1 = capslib.dynamic_routing(u_hat, 1)
    for iterations in (1, 3, 7):
        v, c = uniform_routing(u_hat, iterations)
        torch.testing.assert_close(v, v1)
        torch.testing.assert_close(c, c1)
    torch.testing.assert_close(c1, torch.full_like(c1, 1 / N_OUT))


def test_uniform_routing_with_the_efficient_squash_squashes_the_mean_vote_so():
    u_hat = votes(3)
    v, _ = uniform_routing(u_hat, 1, squash="efficient")
    torch.testing.assert_close(v, efficient_squash(u_hat.sum(dim=1) / N_OUT, dim=-1))
    with pytest.raises(ValueError, match="squash must be one of \\['sabour', 'efficient'\\], got 'hinton'"):
        uniform_routing(u_hat, 1, squash="hinton")


# --- self-attention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("scale", [None, math.sqrt(8)])
def test_self_attention_routing_equals_the_loop_reference(with_prior, scale):
    u_hat = votes(4)
    prior = 0.1 * torch.randn(N_IN, N_OUT, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    prior = prior if with_prior else None
    v, c = self_attention_routing(u_hat, 1, prior=prior, scale=scale)
    v_ref, c_ref = self_attention_reference(u_hat, prior, scale)
    torch.testing.assert_close(c, c_ref)
    torch.testing.assert_close(v, v_ref)


def test_self_attention_favours_the_output_whose_votes_agree():
    """Every vote for output 0 agrees; input 0's vote for output 1 points against the others':
    input 0 couples almost only to output 0, the others less so (their votes for output 1 agree
    with two of the three other votes)."""
    u_hat = torch.zeros(1, 4, 2, 2)
    u_hat[0, :, 0] = torch.tensor([1.0, 0.0])  # every vote for output 0 agrees
    u_hat[0, 1:, 1] = torch.tensor([1.0, 0.0])
    u_hat[0, 0, 1] = torch.tensor([-1.0, 0.0])  # input 0 disagrees on output 1
    _, c = self_attention_routing(u_hat)
    assert c[0, 0, 0] > 0.98 and 0.5 < c[0, 1, 0] < 0.9


def test_self_attention_bad_options_are_a_clear_value_error():
    u_hat = votes()
    with pytest.raises(ValueError, match=r"prior must be a tensor of shape \(N_in, N_out\) = \(5, 4\), got \(4, 5\)"):
        self_attention_routing(u_hat, prior=torch.zeros(N_OUT, N_IN))
    with pytest.raises(ValueError, match="scale must be a number > 0 or None, got 0"):
        self_attention_routing(u_hat, scale=0)


# --- EM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_em_routing_equals_the_loop_reference(iterations):
    u_hat = votes(5, scale=0.5)
    activations = torch.rand(B, N_IN, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    lambdas = [0.01 * (t + 1) for t in range(iterations)]
    beta_u, beta_a = 0.3, -0.2
    routed = em_routing(
        u_hat,
        iterations,
        activations=activations,
        beta_u=beta_u,
        beta_a=beta_a,
        inverse_temperature=lambdas,
        return_trace=True,
    )
    for b in range(B):
        v_ref, r_ref, a_ref = em_reference(u_hat[b], iterations, activations[b].tolist(), beta_u, beta_a, lambdas)
        torch.testing.assert_close(routed.v[b], v_ref)
        torch.testing.assert_close(routed.c[b], r_ref)
        torch.testing.assert_close(routed.activations[b], a_ref)
        torch.testing.assert_close(torch.linalg.vector_norm(routed.v[b], dim=-1), a_ref)


def test_em_routing_takes_learned_costs_per_output():
    u_hat = votes(7, scale=0.5)
    beta_a = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    # after one M-step each output's activation depends on its own beta_a only
    per_output = em_routing(u_hat, 1, beta_a=beta_a, inverse_temperature=0.01, return_trace=True)
    for j in range(N_OUT):
        one = em_routing(u_hat, 1, beta_a=float(beta_a[j]), inverse_temperature=0.01, return_trace=True)
        torch.testing.assert_close(per_output.activations[:, j], one.activations[:, j])
    beta_u = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    v, _ = em_routing(u_hat, 1, beta_u=beta_u, inverse_temperature=0.01)
    v_ref, _ = em_routing(u_hat, 1, beta_u=0.1, inverse_temperature=0.01)
    torch.testing.assert_close(v[:, 0], v_ref[:, 0])


def test_em_routing_assigns_each_input_to_the_output_whose_votes_it_agrees_with():
    """Inputs 0-2 agree on output 0 (tight votes) and scatter on output 1; inputs 3-5 the other way
    round. From R = 1/2 everywhere, EM assigns each input to the output its votes agree on (here
    within 5 iterations; after 3 some are still on their way)."""
    generator = torch.Generator().manual_seed(0)
    u_hat = torch.randn(1, 6, 2, 2, generator=generator, dtype=torch.float64)  # scattered votes
    u_hat[0, :3, 0] = torch.tensor([1.0, 0.0], dtype=torch.float64) + 0.05 * u_hat[0, :3, 0]
    u_hat[0, 3:, 1] = torch.tensor([0.0, 1.0], dtype=torch.float64) + 0.05 * u_hat[0, 3:, 1]
    _, r = em_routing(u_hat, 5, inverse_temperature=0.01)
    assert (r[0, :3, 0] > 0.9).all() and (r[0, 3:, 1] > 0.9).all(), r


def test_em_routing_bad_options_are_a_clear_value_error():
    u_hat = votes()
    with pytest.raises(ValueError, match=r"activations must be a tensor of shape \(B, N_in\) = \(3, 5\), got \(5,\)"):
        em_routing(u_hat, activations=torch.ones(N_IN, dtype=torch.float64))
    with pytest.raises(ValueError, match="inverse_temperature must be a number > 0 or 3 of them"):
        em_routing(u_hat, 3, inverse_temperature=[1.0, 2.0])
    with pytest.raises(ValueError, match="inverse_temperature must be a number > 0"):
        em_routing(u_hat, 3, inverse_temperature=-1.0)
    with pytest.raises(
        ValueError, match=r"beta_a must be a number or a tensor of shape \(N_out,\) = \(4,\), got \(5,\)"
    ):
        em_routing(u_hat, beta_a=torch.zeros(N_IN))


def test_the_squashes_agree_with_their_formulas():
    s = torch.randn(7, 5, dtype=torch.float64)
    for row in s:
        torch.testing.assert_close(squash(row, dim=0), torch.tensor(squash_one(row.tolist()), dtype=torch.float64))
        torch.testing.assert_close(
            efficient_squash(row, dim=0), torch.tensor(efficient_squash_one(row.tolist()), dtype=torch.float64)
        )
    zero = torch.zeros(3, requires_grad=True)
    efficient_squash(zero, dim=0).sum().backward()
    assert torch.isfinite(zero.grad).all()
