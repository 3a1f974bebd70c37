"""capslib.fast_routing: the fused predictions + routing compute what the reference computes.

The model routes with :func:`capslib.fast_routing.routed_capsules` by default; the readable
``predictions()`` + ``dynamic_routing()`` path is the reference. Values, couplings and gradients
(through every iteration, or only the last with ``detach_intermediate``) must agree.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import capslib
from capslib.compiling import CompiledOrEager, compiled_or_eager
from capslib.fast_routing import routed_capsules
from capslib.train import total_loss


def _inputs(dtype=torch.float64, batch=3, num_in=20, num_out=4, dim_out=5, dim_in=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = (0.5 * torch.randn(num_in, num_out, dim_out, dim_in, generator=generator, dtype=dtype)).requires_grad_()
    u = torch.randn(batch, num_in, dim_in, generator=generator, dtype=dtype).requires_grad_()
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
    import capslib.fast_routing as fast_routing

    monkeypatch.setattr(fast_routing, "CPU_CHUNK_BYTES", chunk_bytes)
    u, weight = _inputs(batch=5)
    assert fast_routing._chunk_size(u, weight) == max(1, chunk_bytes // (20 * 4 * 5 * 8))
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
    u, weight = _inputs(batch=2, num_in=7, num_out=3, dim_out=4, dim_in=3)
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
    for fused in (True, False):
        model.digit_caps.fused = fused
        model.zero_grad()
        out = model(x, y)
        assert (out.u_hat is None) and model.digit_caps.uses_fused_path(torch.zeros(1, 1152, 8)) == fused
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


def test_fused_by_default_on_cpu_only():
    layer = capslib.RoutingCaps()
    assert layer.fused is None
    assert layer.uses_fused_path(torch.zeros(1, 1152, 8))
    assert not layer.uses_fused_path(torch.zeros(1, 1152, 8, device="meta"))  # not timed off the CPU yet
    layer.fused = True
    assert layer.uses_fused_path(torch.zeros(1, 1152, 8, device="meta"))
    layer.fused = False
    assert not layer.uses_fused_path(torch.zeros(1, 1152, 8))


def test_trace_and_autocast_take_the_reference_path():
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    x = torch.rand(2, 1, 28, 28)
    u = torch.zeros(2, 1152, 8)
    assert model.digit_caps.uses_fused_path(u)
    assert not model.digit_caps.uses_fused_path(u, return_trace=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert not model.digit_caps.uses_fused_path(u)
    with torch.no_grad():
        traced = model(x, return_trace=True)
        fast = model(x)
    assert traced.u_hat is not None and len(traced.trace) == 3
    torch.testing.assert_close(fast.lengths, traced.lengths, rtol=1e-5, atol=1e-6)


def test_conv1_channels_last_path_keeps_hooks_and_numbers():
    torch.manual_seed(0)
    model = capslib.CapsNet()
    x = torch.rand(3, 1, 28, 28)
    seen = []
    handle = model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        out = model._conv1(x)
    finally:
        handle.remove()
    assert seen == [torch.Size([3, 256, 20, 20])]
    torch.testing.assert_close(out, model.conv1(x), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous()  # gradients on: handed on in the default layout


# ------------------------------------------------------------------ opt-in torch.compile


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(model, **options):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    x = torch.rand(2, 1, 28, 28)
    step = compiled_or_eager(model)
    assert isinstance(step, CompiledOrEager) and step.compiled
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        out = step(x)
    assert not step.compiled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        torch.testing.assert_close(step(x).lengths, out.lengths)
    torch.testing.assert_close(out.lengths, model(x).lengths)


def test_compile_passes_the_models_own_value_errors_through(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    step = compiled_or_eager(capslib.CapsNet())
    with pytest.raises(ValueError, match="pass the true labels"):
        step(torch.rand(2, 1, 28, 28))  # training mode with a decoder and no labels
    assert step.compiled


def test_compiled_model_still_rejects_bad_labels(monkeypatch):
    """Inside a compiled graph the label-range check is skipped; the wrapper runs it eagerly."""
    tracing = [False]

    def fake_compile(model, **options):
        def run(*args, **kwargs):  # the model as dynamo traces it: is_compiling() is True inside
            tracing[0] = True
            try:
                return model(*args, **kwargs)
            finally:
                tracing[0] = False

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: tracing[0])
    step = compiled_or_eager(capslib.CapsNet())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got values from 0 to 10"):
        step(torch.rand(2, 1, 28, 28), torch.tensor([0, 10]))
    assert step.compiled


@pytest.mark.slow
def test_compiled_training_forward_is_one_graph():
    """No graph breaks: the compiled model takes the reference routing and skips value checks."""
    import torch._dynamo as dynamo

    model = capslib.CapsNet().train()
    explained = dynamo.explain(model)(torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]))
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]


def test_compile_disabled_returns_the_model():
    model = capslib.CapsNet()
    assert compiled_or_eager(model, enabled=False) is model


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """Real torch.compile (needs a C++ compiler on CPU; about a minute)."""
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    x = torch.rand(4, 1, 28, 28)
    step = compiled_or_eager(model)
    with torch.no_grad():
        compiled = step(x).lengths
        eager = model(x).lengths
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
