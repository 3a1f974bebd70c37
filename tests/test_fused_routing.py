"""capslib.fused_routing: the fused implementation computes what the reference computes.

``routing_implementation="fused"`` routes with :func:`capslib.fused_routing.routed_capsules`;
``"reference"`` with ``prediction_vectors()`` + ``dynamic_routing()``, the readable code. Values,
couplings and gradients (through every iteration, or only the last with ``detach_intermediate``)
must agree, and each name must run the code it names.
"""

from __future__ import annotations

import pytest
import torch

import capslib
import capslib.fused_routing as fused_routing
import capslib.routing as routing
from capslib.fused_routing import routed_capsules
from capslib.routing import ROUTING_IMPLEMENTATIONS
from capslib.training import total_loss


def _inputs(dtype=torch.float64, batch=3, num_in=20, num_out=4, out_dim=5, in_dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = (0.5 * torch.randn(num_in, num_out, out_dim, in_dim, generator=generator, dtype=dtype)).requires_grad_()
    u = torch.randn(batch, num_in, in_dim, generator=generator, dtype=dtype).requires_grad_()
    return u, weight


def _reference(u, weight, iterations, detach_intermediate=False):
    u_hat = torch.einsum("ijed,bid->bije", weight, u)  # (B, N_in, N_out, D_out)
    return capslib.dynamic_routing(u_hat, iterations, detach_intermediate)


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
@pytest.mark.parametrize("detach_intermediate", [False, True])
@pytest.mark.parametrize("loss_uses_coupling", [False, True])
def test_fused_equals_reference_values_and_gradients(iterations, detach_intermediate, loss_uses_coupling):
    u, weight = _inputs()
    generator = torch.Generator().manual_seed(1)
    grad_v = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    grad_c = torch.randn(3, 20, 4, generator=generator, dtype=torch.float64)

    def loss(v, c):
        return (v * grad_v).sum() + ((c * grad_c).sum() if loss_uses_coupling else 0.0)

    v_ref, c_ref = _reference(u, weight, iterations, detach_intermediate)
    grads_ref = torch.autograd.grad(loss(v_ref, c_ref), (u, weight))
    v, c = routed_capsules(u, weight, iterations, detach_intermediate)
    grads = torch.autograd.grad(loss(v, c), (u, weight))
    assert c.shape == (3, 20, 4) and v.shape == (3, 4, 5)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 20 * 4 * 5 * 8])  # chunks of 1 and of 2 examples
def test_cpu_batch_chunks_route_like_the_whole_batch(monkeypatch, chunk_bytes):
    monkeypatch.setattr(fused_routing, "CPU_CHUNK_BYTES", chunk_bytes)
    u, weight = _inputs(batch=5)
    assert fused_routing._chunk_size(u, weight) == max(1, chunk_bytes // (20 * 4 * 5 * 8))
    grad_v = torch.randn(5, 4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v_ref, c_ref = _reference(u, weight, 3)
    grads_ref = torch.autograd.grad((v_ref * grad_v).sum(), (u, weight))
    v, c = routed_capsules(u, weight, 3)
    grads = torch.autograd.grad((v * grad_v).sum(), (u, weight))
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_bad_shapes_and_iterations_raise():
    u, weight = _inputs()
    with pytest.raises(ValueError, match="matching"):
        routed_capsules(u[:, :, :5], weight)
    with pytest.raises(ValueError, match="matching"):
        routed_capsules(u[0], weight)
    with pytest.raises(ValueError, match="routing iterations"):
        routed_capsules(u, weight, 0)


def test_fused_passes_gradcheck():
    u, weight = _inputs(batch=2, num_in=7, num_out=3, out_dim=4, in_dim=3)
    assert torch.autograd.gradcheck(lambda a, b: routed_capsules(a, b, 3), (u, weight))


def test_inference_path_agrees():
    u, weight = _inputs(dtype=torch.float32)
    v_ref, c_ref = _reference(u, weight, 3)
    with torch.no_grad():
        v, c = routed_capsules(u, weight, 3)
    assert not v.requires_grad
    torch.testing.assert_close(v, v_ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref.detach(), rtol=1e-5, atol=1e-6)
    # each input capsule's coupling sums to 1 over the OUTPUT capsules
    torch.testing.assert_close(c.sum(dim=2), torch.ones(3, 20))


def test_routing_stays_per_example():
    """One example's output does not depend on the rest of its batch (no shared logits)."""
    u, weight = _inputs(dtype=torch.float32, batch=4)
    with torch.no_grad():
        v_all, c_all = routed_capsules(u, weight, 3)
        v_one, c_one = routed_capsules(u[2:3], weight, 3)
    torch.testing.assert_close(v_all[2:3], v_one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_all[2:3], c_one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("detach_intermediate", [False, True])
def test_capsnet_fused_and_reference_paths_agree(detach_intermediate):
    """The whole default-sized model: outputs, both losses and every parameter gradient."""
    torch.manual_seed(0)
    model = capslib.CapsNet(detach_intermediate=detach_intermediate)
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 28, 28, generator=generator)
    y = torch.tensor([3, 1, 4, 1])
    results = []
    for implementation in ("fused", "reference"):
        model.routing_implementation = implementation
        model.zero_grad()
        out = model(x, y)
        assert out.u_hat is None
        loss, margin, recon = total_loss(out, x, y)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((out.lengths.detach(), out.coupling.detach(), margin.detach(), recon.detach(), grads))
    (len_f, c_f, m_f, r_f, g_f), (len_r, c_r, m_r, r_r, g_r) = results
    torch.testing.assert_close(len_f, len_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_f, c_r, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(m_f, m_r, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r_f, r_r, rtol=1e-5, atol=1e-5)
    for name in g_r:
        scale = g_r[name].abs().max().item()
        torch.testing.assert_close(g_f[name], g_r[name], rtol=1e-4, atol=1e-5 * max(scale, 1e-3), msg=name)


def _spy_on_implementations(monkeypatch) -> list[str]:
    """Record which implementation each routing call runs."""
    calls: list[str] = []
    fused, reference = routing.routed_capsules, routing.dynamic_routing
    monkeypatch.setattr(routing, "routed_capsules", lambda *a, **k: calls.append("fused") or fused(*a, **k))
    monkeypatch.setattr(routing, "dynamic_routing", lambda *a, **k: calls.append("reference") or reference(*a, **k))
    return calls


def test_each_name_runs_its_own_implementation(monkeypatch):
    calls = _spy_on_implementations(monkeypatch)
    u = torch.rand(2, 1152, 8)
    for name in ("reference", "fused", "auto"):
        capslib.RoutingCaps(routing_implementation=name)(u)
    assert calls == ["reference", "fused", "fused"]  # auto is fused on the CPU


def test_the_table_is_one_signature_and_its_entries_agree():
    """Every entry takes (u, weight, R, *, detach_intermediate, trace, agreement_scale) and gives the
    reference's numbers, values and gradients."""
    assert list(ROUTING_IMPLEMENTATIONS) == ["auto", "reference", "fused"]
    assert capslib.ROUTING_IMPLEMENTATIONS is ROUTING_IMPLEMENTATIONS
    u, weight = _inputs()
    expected = _reference(u, weight, 3, detach_intermediate=True)
    grads_expected = torch.autograd.grad(expected[0].pow(3).sum(), (u, weight))
    for name, route in ROUTING_IMPLEMENTATIONS.items():
        routed = route(u, weight, 3, detach_intermediate=True, trace=False, agreement_scale=1.0)
        assert isinstance(routed, capslib.RoutingResult) and routed.trace == [], name
        torch.testing.assert_close(routed.v, expected[0], rtol=1e-12, atol=1e-12, msg=name)
        torch.testing.assert_close(routed.c, expected[1], rtol=1e-12, atol=1e-12, msg=name)
        grads = torch.autograd.grad(routed.v.pow(3).sum(), (u, weight))
        for got, want in zip(grads, grads_expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("agreement_scale", [0.0, 0.5, 4.0])
def test_fused_agreement_scale_equals_reference_values_and_gradients(agreement_scale):
    u, weight = _inputs()
    u_hat = torch.einsum("ijed,bid->bije", weight, u)  # (B, N_in, N_out, D_out)
    v_ref, c_ref = capslib.dynamic_routing(u_hat, 4, agreement_scale=agreement_scale)
    grads_ref = torch.autograd.grad(v_ref.pow(3).sum() + c_ref.pow(2).sum(), (u, weight))
    v, c = routed_capsules(u, weight, 4, agreement_scale=agreement_scale)
    grads = torch.autograd.grad(v.pow(3).sum() + c.pow(2).sum(), (u, weight))
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_auto_is_one_rule():
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert routing.resolve_routing_implementation("auto", cpu) == "fused"
    assert routing.resolve_routing_implementation("auto", meta) == "reference"  # any device but the CPU
    assert routing.resolve_routing_implementation("auto", cpu, trace=True) == "reference"  # the trace is its record
    for name in ("reference", "fused"):
        for trace in (False, True):
            assert routing.resolve_routing_implementation(name, cpu, trace) == name
            assert routing.resolve_routing_implementation(name, meta, trace) == name


def test_unknown_implementation_raises_listing_the_known_names():
    known = r"\['auto', 'reference', 'fused'\]"
    with pytest.raises(ValueError, match=rf"routing_implementation must be one of {known}, got 'fast'"):
        capslib.CapsNet(routing_implementation="fast")
    model = capslib.CapsNet()
    with pytest.raises(ValueError, match=known):
        model.routing_implementation = "flash"
    layer = capslib.RoutingCaps()
    layer.routing_implementation = "flash"  # a plain attribute: checked when it is used
    with pytest.raises(ValueError, match=known):
        layer(torch.rand(1, 1152, 8))
    layer.routing_implementation = ["fused"]  # not a name at all
    with pytest.raises(ValueError, match=known):
        layer(torch.rand(1, 1152, 8))


def test_auto_traces_with_the_reference_silently(monkeypatch, recwarn):
    calls = _spy_on_implementations(monkeypatch)
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        traced = model(x, return_trace=True)
        fast = model(x)
    assert calls == ["reference", "fused"] and len(recwarn) == 0
    assert traced.u_hat.shape == (2, 1152, 10, 16) and len(traced.trace) == 3
    torch.testing.assert_close(fast.lengths, traced.lengths, rtol=1e-5, atol=1e-6)


def test_a_trace_asked_of_the_fused_path_warns_and_the_reference_runs(monkeypatch):
    calls = _spy_on_implementations(monkeypatch)
    torch.manual_seed(0)
    model = capslib.CapsNet(routing_implementation="fused").eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad(), pytest.warns(UserWarning, match="fused routing keeps no trace.*reference routing runs"):
        traced = model(x, return_trace=True)
    assert calls == ["reference"]
    assert traced.u_hat.shape == (2, 1152, 10, 16) and len(traced.trace) == 3
    with torch.no_grad():
        torch.testing.assert_close(model(x).lengths, traced.lengths, rtol=1e-5, atol=1e-6)


def test_fused_under_autocast_routes_in_float32():
    u, weight = _inputs(dtype=torch.float32)
    expected, _ = routed_capsules(u, weight, 3)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        v, c = routed_capsules(u, weight, 3)
    assert v.dtype == c.dtype == torch.float32
    torch.testing.assert_close(v, expected)


def test_both_paths_under_bf16_autocast_return_float32_and_agree():
    """--amp promises float32 routing: poses and coupling come out float32 from either path, equal."""
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    outputs = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for name in ("reference", "fused"):
            model.routing_implementation = name
            outputs[name] = model(x)
            assert outputs[name].poses.dtype == outputs[name].coupling.dtype == torch.float32, name
    torch.testing.assert_close(outputs["fused"].poses, outputs["reference"].poses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs["fused"].coupling, outputs["reference"].coupling, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("iterations", [1, 3])
def test_empty_batch_routes_to_empty_outputs(iterations):
    """B = 0 gives what the reference gives, empty tensors of the right shapes, and zero gradients."""
    u, weight = _inputs(batch=0)
    v, c = routed_capsules(u, weight, iterations)
    v_ref, c_ref = _reference(u, weight, iterations)
    assert v.shape == v_ref.shape == (0, 4, 5) and c.shape == c_ref.shape == (0, 20, 4)
    (v.sum() + c.sum()).backward()
    assert torch.equal(weight.grad, torch.zeros_like(weight)) and u.grad.shape == (0, 20, 6)
