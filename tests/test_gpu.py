"""Checks that need a GPU (skipped without one): mixed precision keeps the shipped model's accuracy.

Run them on a CUDA machine with ``python -m pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

import capslib
from capslib.evaluate import evaluate
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
    from capslib.train import fit

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
