"""Dynamic routing (Procedure 1) against the loop-by-loop reference in tests/reference.py."""

from __future__ import annotations

import math

import pytest
import torch
from reference import (
    predictions_reference,
    routing_reference,
    squash_formula,
    weighted_sum_reference,
)
from torch.overrides import TorchFunctionMode

import capslib
from capslib import RoutingCaps, dynamic_routing

# (B, N_in, N_out, D): edge cases (one input, one output, D = 1) and a few ordinary ones.
SIZES = [
    (1, 1, 1, 1),
    (1, 5, 2, 3),
    (3, 12, 4, 4),
    (3, 5, 1, 3),
    (3, 1, 4, 1),
    (1, 12, 2, 4),
    (3, 12, 4, 1),
    (3, 5, 4, 3),
]
ITERATIONS = [1, 2, 3, 5]


def make_u_hat(batch: int, num_in: int, num_out: int, dim: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """Random float64 predictions ``(B, N_in, N_out, D)``; ``scale`` ~1 makes routing move ``c`` a lot."""
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, num_in, num_out, dim, generator=generator, dtype=torch.float64)


# --- the reference itself -------------------------------------------------------------------------


def test_reference_matches_hand_computation():
    """Two inputs, two outputs, D = 1: input 0 votes only for output 0, input 1 only for output 1."""
    u_hat = torch.tensor([[[[1.0], [0.0]], [[0.0], [1.0]]]], dtype=torch.float64)  # (1, 2, 2, 1)
    steps = routing_reference(u_hat, iterations=2)
    # Iteration 1: uniform c = 1/2, s_j = 0.5, v_j = 0.25 / 1.25 = 0.2.
    torch.testing.assert_close(steps[0].c, torch.full((1, 2, 2), 0.5, dtype=torch.float64))
    torch.testing.assert_close(steps[0].v, torch.full((1, 2, 1), 0.2, dtype=torch.float64))
    # Iteration 2: b = [[0.2, 0], [0, 0.2]], so c_00 = c_11 = sigmoid(0.2) and s_j = sigmoid(0.2).
    torch.testing.assert_close(steps[1].b, torch.tensor([[[0.2, 0.0], [0.0, 0.2]]], dtype=torch.float64))
    sig = 1.0 / (1.0 + math.exp(-0.2))
    torch.testing.assert_close(steps[1].c, torch.tensor([[[sig, 1 - sig], [1 - sig, sig]]], dtype=torch.float64))
    v = sig**2 / (1.0 + sig**2)
    torch.testing.assert_close(steps[1].v, torch.full((1, 2, 1), v, dtype=torch.float64))


# --- vectorised routing == reference --------------------------------------------------------------


@pytest.mark.parametrize("iterations", ITERATIONS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}-Nin{}-Nout{}-D{}".format(*s))
def test_routing_matches_reference(size, iterations):
    u_hat = make_u_hat(*size, seed=sum(size) + iterations)
    expected = routing_reference(u_hat, iterations)

    result = dynamic_routing(u_hat, iterations=iterations, return_trace=True)
    assert isinstance(result, capslib.RoutingResult)
    assert len(result.trace) == iterations
    for r, (step, ref) in enumerate(zip(result.trace, expected, strict=True)):
        for name in ("b", "c", "s", "v"):
            torch.testing.assert_close(
                getattr(step, name), getattr(ref, name), msg=lambda m, r=r, n=name: f"{n}@{r}: {m}"
            )
    torch.testing.assert_close(result.v, expected[-1].v)
    torch.testing.assert_close(result.c, expected[-1].c)

    v, c = dynamic_routing(u_hat, iterations=iterations)
    torch.testing.assert_close(v, expected[-1].v)
    torch.testing.assert_close(c, expected[-1].c)


@pytest.mark.parametrize("agreement_scale", [0.0, 0.5, 1.0, 4.0])
def test_agreement_scale_matches_the_reference_with_that_scale(agreement_scale):
    """``agreement_scale`` multiplies line 7's agreement; 1 is the paper's routing, step by step."""
    u_hat = make_u_hat(2, 5, 3, 4, seed=21)
    expected = routing_reference(u_hat, 4, agreement_scale)
    result = dynamic_routing(u_hat, 4, return_trace=True, agreement_scale=agreement_scale)
    for step, ref in zip(result.trace, expected, strict=True):
        for name in ("b", "c", "s", "v"):
            torch.testing.assert_close(getattr(step, name), getattr(ref, name))
    if agreement_scale == 1.0:
        paper = dynamic_routing(u_hat, 4, return_trace=True)
        for step, theirs in zip(result.trace, paper.trace, strict=True):
            assert torch.equal(step.b, theirs.b) and torch.equal(step.v, theirs.v)
    if agreement_scale == 0.0:  # no agreement: the coupling stays uniform
        for step in result.trace:
            torch.testing.assert_close(step.c, torch.full_like(step.c, 1 / 3))


@pytest.mark.parametrize("agreement_scale", [-1.0, float("nan"), float("inf"), True, "2", None])
def test_bad_agreement_scale_raises(agreement_scale):
    with pytest.raises(ValueError, match="agreement_scale must be a finite number >= 0"):
        dynamic_routing(make_u_hat(1, 2, 2, 2), 3, agreement_scale=agreement_scale)


def test_routing_moves_the_coupling():
    """Guard for the comparison above: with these inputs routing really changes ``c`` and ``v``."""
    u_hat = make_u_hat(3, 12, 4, 4, seed=1)
    one = dynamic_routing(u_hat, iterations=1, return_trace=True)
    three = dynamic_routing(u_hat, iterations=3, return_trace=True)
    torch.testing.assert_close(one.c, torch.full_like(one.c, 0.25))
    assert (three.c - 0.25).abs().max() > 0.05
    assert (three.v - one.v).abs().max() > 1e-3


def test_trace_length_and_initial_logits():
    u_hat = make_u_hat(2, 5, 3, 4)
    for iterations in (1, 2, 4):
        trace = dynamic_routing(u_hat, iterations=iterations, return_trace=True).trace
        assert len(trace) == iterations
        assert torch.equal(trace[0].b, torch.zeros(2, 5, 3, dtype=torch.float64))
        assert trace[0].b.shape == trace[0].c.shape == (2, 5, 3)
        assert trace[0].s.shape == trace[0].v.shape == (2, 3, 4)
    # b of iteration r + 1 is b of iteration r plus the agreement of iteration r.
    trace = dynamic_routing(u_hat, iterations=3, return_trace=True).trace
    for earlier, later in zip(trace[:-1], trace[1:], strict=True):
        agreement = (u_hat * earlier.v.unsqueeze(1)).sum(dim=-1)  # (B, N_in, N_out)
        torch.testing.assert_close(later.b, earlier.b + agreement)


# --- coupling coefficients ------------------------------------------------------------------------


def test_coupling_sums_to_one_over_outputs_not_inputs():
    u_hat = make_u_hat(2, 5, 3, 4, seed=3)
    trace = dynamic_routing(u_hat, iterations=4, return_trace=True).trace
    for step in trace:
        assert (step.c > 0).all()
        torch.testing.assert_close(step.c.sum(dim=2), torch.ones(2, 5, dtype=torch.float64))
        # The wrong-axis softmax (over the inputs) would make these 1 instead.
        assert not torch.allclose(step.c.sum(dim=1), torch.ones(2, 3, dtype=torch.float64))
    torch.testing.assert_close(trace[0].c.sum(dim=1), torch.full((2, 3), 5 / 3, dtype=torch.float64))


# --- batch independence ---------------------------------------------------------------------------


def test_routing_batch_independence():
    u_hat = make_u_hat(4, 6, 3, 4, seed=4)
    batched = dynamic_routing(u_hat, iterations=3, return_trace=True)
    for k in range(4):
        alone = dynamic_routing(u_hat[k : k + 1], iterations=3, return_trace=True)
        torch.testing.assert_close(alone.v, batched.v[k : k + 1])
        torch.testing.assert_close(alone.c, batched.c[k : k + 1])
        for step_alone, step_batched in zip(alone.trace, batched.trace, strict=True):
            torch.testing.assert_close(step_alone.b, step_batched.b[k : k + 1])
    # The logits are per example, not shared across the batch.
    later = batched.trace[1]
    assert not torch.allclose(later.b[0], later.b[1])
    assert not torch.allclose(later.c[0], later.c[1])


def test_capsnet_batch_independence():
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    with torch.no_grad():
        model.digit_caps.weight.mul_(30.0)  # so routing changes c visibly
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 28, 28, generator=generator)
    with torch.no_grad():
        batched = model(images, return_trace=True)
        alone = model(images[1:2], return_trace=True)
    torch.testing.assert_close(alone.lengths, batched.lengths[1:2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(alone.poses, batched.poses[1:2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(alone.coupling, batched.coupling[1:2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(alone.reconstructions, batched.reconstructions[1:2], rtol=1e-4, atol=1e-6)
    last = batched.trace[-1]
    assert not torch.allclose(last.b[0], last.b[1])


# --- argument checking ----------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [0, -1, 1.5, True, "3", None])
def test_bad_iterations_raise(iterations):
    with pytest.raises(ValueError, match="iterations"):
        dynamic_routing(make_u_hat(1, 2, 2, 2), iterations=iterations)


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 5, 6), (3,)])
def test_wrong_rank_u_hat_raises(shape):
    with pytest.raises(ValueError, match="N_in, N_out, D_out"):
        dynamic_routing(torch.zeros(shape), iterations=2)


def test_routing_caps_bad_iterations_raise():
    with pytest.raises(ValueError):
        RoutingCaps(4, 2, 3, 2, routing_iterations=0)


# --- gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 3])
def test_gradcheck(iterations):
    u_hat = make_u_hat(1, 3, 2, 3, seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: dynamic_routing(x, iterations=iterations), (u_hat,))


def test_gradient_flows_through_every_iteration_by_default():
    """The default gradient is the full derivative: equal to autograd through the loop reference."""
    u_hat = make_u_hat(2, 4, 3, 3, seed=6)
    weights = make_u_hat(2, 1, 3, 3, seed=7).squeeze(1)  # (B, N_out, D): a random linear read-out

    lib_in = u_hat.clone().requires_grad_(True)
    v, _ = dynamic_routing(lib_in, iterations=3)
    (grad_lib,) = torch.autograd.grad((v * weights).sum(), lib_in)

    ref_in = u_hat.clone().requires_grad_(True)
    v_ref = routing_reference(ref_in, 3)[-1].v
    (grad_ref,) = torch.autograd.grad((v_ref * weights).sum(), ref_in)
    torch.testing.assert_close(grad_lib, grad_ref)


def test_detach_intermediate_gradient_treats_coupling_as_constant():
    u_hat = make_u_hat(2, 4, 3, 3, seed=8)
    weights = make_u_hat(2, 1, 3, 3, seed=9).squeeze(1)

    lib_in = u_hat.clone().requires_grad_(True)
    v, _ = dynamic_routing(lib_in, iterations=3, detach_intermediate=True)
    (grad_lib,) = torch.autograd.grad((v * weights).sum(), lib_in)

    # Manual: the final c is a constant; only s = sum_i c u_hat and the squash are differentiated.
    c_const = routing_reference(u_hat, 3)[-1].c
    ref_in = u_hat.clone().requires_grad_(True)
    v_ref = squash_formula(weighted_sum_reference(c_const, ref_in))
    (grad_ref,) = torch.autograd.grad((v_ref * weights).sum(), ref_in)
    torch.testing.assert_close(grad_lib, grad_ref)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_detach_intermediate_same_output_different_gradient(iterations):
    u_hat = make_u_hat(2, 5, 3, 4, seed=10)
    outputs, grads = {}, {}
    for detach in (False, True):
        x = u_hat.clone().requires_grad_(True)
        result = dynamic_routing(x, iterations=iterations, detach_intermediate=detach, return_trace=True)
        outputs[detach] = result
        (grads[detach],) = torch.autograd.grad(result.v.pow(3).sum(), x)
    torch.testing.assert_close(outputs[True].v, outputs[False].v)
    torch.testing.assert_close(outputs[True].c, outputs[False].c)
    for a, b in zip(outputs[True].trace, outputs[False].trace, strict=True):
        torch.testing.assert_close(a.b, b.b)
    if iterations == 1:
        torch.testing.assert_close(grads[True], grads[False])  # nothing to detach
    else:
        assert (grads[True] - grads[False]).abs().max() > 1e-6


# --- RoutingCaps ----------------------------------------------------------------------------------


def make_routing_caps(iterations: int = 3) -> RoutingCaps:
    torch.manual_seed(11)
    layer = RoutingCaps(in_capsules=6, in_dim=3, out_capsules=4, out_dim=5, routing_iterations=iterations)
    layer.double()
    with torch.no_grad():
        layer.weight.normal_()  # unit-scale weights so routing moves c
    return layer


def test_routing_caps_weight_layout():
    layer = RoutingCaps(in_capsules=6, in_dim=3, out_capsules=4, out_dim=5)
    assert layer.weight.shape == (6, 4, 5, 3)  # (N_in, N_out, D_out, D_in)


def test_routing_caps_predictions_match_reference():
    layer = make_routing_caps()
    u = torch.randn(2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    torch.testing.assert_close(layer.prediction_vectors(u), predictions_reference(layer.weight.detach(), u))


@pytest.mark.parametrize("iterations", [1, 3, 4])
def test_routing_caps_forward_is_routing_of_predictions(iterations):
    layer = make_routing_caps(iterations)
    u = torch.randn(2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    u_hat = layer.prediction_vectors(u)
    v, c = layer(u)
    v_expected, c_expected = dynamic_routing(u_hat, iterations=iterations)
    torch.testing.assert_close(v, v_expected)
    torch.testing.assert_close(c, c_expected)
    traced = layer(u, return_trace=True)
    assert len(traced.trace) == iterations
    steps = routing_reference(predictions_reference(layer.weight.detach(), u), iterations)
    torch.testing.assert_close(traced.v, steps[-1].v)


def test_routing_caps_iterations_attribute_is_used():
    layer = make_routing_caps(3)
    u = torch.randn(2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    assert len(layer(u, return_trace=True).trace) == 3
    layer.routing_iterations = 5
    assert len(layer(u, return_trace=True).trace) == 5


def test_routing_caps_wrong_input_shape_raises():
    layer = make_routing_caps()
    with pytest.raises(ValueError, match=r"\(B, 6, 3\)"):
        layer(torch.zeros(2, 7, 3, dtype=torch.float64))
    with pytest.raises(ValueError):
        layer(torch.zeros(6, 3, dtype=torch.float64))


# --- vectorisation --------------------------------------------------------------------------------


class _CountTorchCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def count_torch_calls(u_hat: torch.Tensor, iterations: int) -> int:
    with _CountTorchCalls() as counter:
        dynamic_routing(u_hat, iterations=iterations)
    return counter.calls


def test_no_python_loop_over_examples_or_capsules():
    """The number of torch operations depends on R only, not on B, N_in or N_out."""
    small = count_torch_calls(make_u_hat(1, 2, 2, 3), iterations=3)
    assert small > 0
    assert count_torch_calls(make_u_hat(4, 30, 7, 3), iterations=3) == small
    assert count_torch_calls(make_u_hat(1, 2, 2, 3), iterations=5) > small


@pytest.mark.parametrize("return_trace", [False, True])
def test_empty_batch_routes_to_empty_outputs(return_trace):
    u_hat = torch.zeros(0, 6, 3, 4, dtype=torch.float64)
    routed = dynamic_routing(u_hat, iterations=3, return_trace=return_trace)
    v, c = (routed.v, routed.c) if return_trace else routed
    assert v.shape == (0, 3, 4) and c.shape == (0, 6, 3)
