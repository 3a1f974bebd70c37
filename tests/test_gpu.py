"""Checks that need a GPU (skipped without one): mixed precision keeps the shipped model's accuracy.

Run them on a CUDA machine with ``python -m pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

import capslib
from capslib.evaluation.accuracy import evaluate
from capslib.pretrained import model_card

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class Autocast(torch.nn.Module):
    """Wrap a model so its forward runs under bf16 autocast (squash stays fp32 inside)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, *args, **kwargs):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return self.model(x, *args, **kwargs)


def test_bf16_autocast_keeps_accuracy():
    model = capslib.load_pretrained(device="cuda")
    fp32 = evaluate(model, progress=False)
    bf16 = evaluate(Autocast(model), progress=False)
    assert abs(fp32.errors - model_card()["test_errors"]) <= 1
    assert abs(bf16.errors - fp32.errors) <= 3, (bf16.errors, fp32.errors)
    agreement = (bf16.predictions == fp32.predictions).float().mean().item()
    assert agreement > 0.999
    print(f"fp32 {fp32.errors} errors, bf16 autocast {bf16.errors} errors, agreement {agreement:.4f}")


def test_squash_stays_fp32_under_autocast():
    s = torch.randn(4, 10, 16, device="cuda", dtype=torch.bfloat16) * 300  # |s|^2 overflows in fp16
    v = capslib.squash(s, dim=-1)
    assert v.dtype == torch.bfloat16 and torch.isfinite(v.float()).all()
    assert (torch.linalg.vector_norm(v.float(), dim=-1) <= 1.0 + 1e-2).all()


def test_amp_training_learns_like_fp32(tmp_path):
    """The same short run (2,000 images, 3 epochs) with and without bf16 autocast."""
    from torch.utils.data import Subset

    from capslib.data import mnist
    from capslib.training import fit

    data = mnist(train=True)
    accuracy = {}
    for amp in (False, True):
        result = fit(
            None,
            Subset(data, range(2000)),
            Subset(data, range(59000, 60000)),
            epochs=3,
            batch_size=50,
            amp=amp,
            device="cuda",
            out_dir=str(tmp_path / str(amp)),
            tensorboard=False,
            progress=False,
        )
        accuracy[amp] = result["history"][-1]["val_accuracy"]
    print(f"validation accuracy after 3 short epochs: fp32 {accuracy[False]:.3f}, bf16 autocast {accuracy[True]:.3f}")
    assert accuracy[False] > 0.8 and accuracy[True] > 0.8
    assert abs(accuracy[True] - accuracy[False]) < 0.03


@pytest.mark.parametrize("iterations", [1, 3])
def test_fused_routing_on_cuda_equals_reference(iterations):
    """The fused predictions + routing (its CUDA kernels, no CPU chunking) against the einsum reference."""
    from capslib.fused_routing import routed_capsules

    generator = torch.Generator().manual_seed(0)
    weight = (0.5 * torch.randn(40, 10, 16, 8, generator=generator, dtype=torch.float64)).cuda().requires_grad_()
    u = torch.randn(6, 40, 8, generator=generator, dtype=torch.float64).cuda().requires_grad_()
    grad_v = torch.randn(6, 10, 16, generator=generator, dtype=torch.float64).cuda()
    grad_c = torch.randn(6, 40, 10, generator=generator, dtype=torch.float64).cuda()
    results = []
    for fused in (True, False):
        if fused:
            v, c = routed_capsules(u, weight, iterations)
        else:
            v, c = capslib.dynamic_routing(torch.einsum("ijed,bid->bije", weight, u), iterations)
        grads = torch.autograd.grad((v * grad_v).sum() + (c * grad_c).sum(), (u, weight))
        results.append((v, c, *grads))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_capsnet_fused_path_on_cuda_matches_reference():
    """The whole model in fp32 on CUDA: both routing paths give the same outputs, losses and gradients."""
    from capslib.training import total_loss

    torch.manual_seed(0)
    model = capslib.CapsNet().cuda()
    x = torch.rand(8, 1, 28, 28, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    results = []
    for implementation in ("fused", "reference"):
        model.routing_implementation = implementation
        model.zero_grad()
        out = model(x, y)
        loss = total_loss(out, x, y)[0]
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((out.lengths.detach(), loss.detach(), grads))
    (len_f, loss_f, g_f), (len_r, loss_r, g_r) = results
    # TF32 may be on for convolutions: compare at fp32-with-TF32 tolerance.
    torch.testing.assert_close(len_f, len_r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-4, atol=1e-6)
    for name in g_r:
        scale = g_r[name].abs().max().item()
        torch.testing.assert_close(g_f[name], g_r[name], rtol=1e-3, atol=1e-4 * max(scale, 1e-3), msg=name)
