"""benchmarks/: the plain reference computes what capslib computes, and perf.py runs end to end.

``benchmarks/perf.py`` times capslib against ``benchmarks/reference_impls.py``; those timings only
mean something if both compute the same lengths, losses and gradients from the same weights.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import capslib
from capslib.training import total_loss

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import amp_cpu  # noqa: E402
import ddp_scaling  # noqa: E402
import perf  # noqa: E402
import throughput  # noqa: E402
from reference_impls import PlainCapsNet, plain_loss  # noqa: E402


def _pair(iterations: int):
    torch.manual_seed(0)
    model = capslib.CapsNet(routing_iterations=iterations)
    plain = PlainCapsNet(routing_iterations=iterations)
    plain.load_state_dict(model.state_dict())  # strict: same names and shapes
    return model, plain


def test_plain_has_capslib_state_dict_layout():
    model, plain = _pair(3)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert plain.digit_caps.weight.shape == (1152, 10, 16, 8)  # (N_in, N_out, D_out, D_in)


@pytest.mark.parametrize("iterations", [1, 3])
def test_plain_matches_capslib_outputs_losses_and_gradients(iterations):
    model, plain = _pair(iterations)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 28, 28, generator=generator)  # (B, 1, 28, 28)
    y = torch.tensor([3, 0, 7])  # (B,)
    out, plain_out = model(x, y), plain(x, y)
    torch.testing.assert_close(plain_out.lengths, out.lengths)
    torch.testing.assert_close(plain_out.poses, out.poses)
    torch.testing.assert_close(plain_out.reconstructions, out.reconstructions)
    loss, plain_total = total_loss(out, x, y)[0], plain_loss(plain_out, x, y)
    torch.testing.assert_close(plain_total, loss)
    loss.backward()
    plain_total.backward()
    plain_params = dict(plain.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(plain_params[name].grad, param.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_plain_matches_capslib_in_eval_mode():
    model, plain = _pair(3)
    model.eval()
    plain.eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))  # (B, 1, 28, 28)
    with torch.no_grad():
        out, plain_out = model(x), plain(x)
    torch.testing.assert_close(plain_out.lengths, out.lengths)
    torch.testing.assert_close(plain_out.reconstructions, out.reconstructions)


def test_flop_count_is_the_analytic_one():
    flops = perf.flops_per_image(capslib.CapsNet())
    forward = sum(flops.values())
    assert forward == pytest.approx(0.406e9, rel=0.01)  # 0.41 GFLOP forward, 94% in the primary conv
    assert flops["primary conv"] / forward == pytest.approx(0.94, abs=0.005)
    assert flops["u_hat"] == 2 * 1152 * 10 * 16 * 8


@pytest.mark.slow
def test_perf_quick_prints_every_section(capsys):
    perf.main(["--quick", "--batch-size", "4", "--batch-sizes", "1,2", "--iterations", "1,2", "--routing-batch", "1"])
    printed = capsys.readouterr().out
    for heading in (
        "## Machine: fp32 matmul",
        "## Model: analytic FLOPs",
        "## Throughput at batch 4",
        "## Images/s over batch size and routing iterations",
        "## Memory of one training step at batch 4",
        "## Predictions + routing (u -> v), B=4",
        "## Routing step alone",
        "## torch.profiler",
    ):
        assert heading in printed, heading
    assert "training images/s" in printed and "inference images/s" in printed
    assert "R=2 costs" in printed
    assert "loop reference (n, i, j)" in printed
    assert "forward + backward" in printed and "plain/capslib" in printed


@pytest.mark.slow  # bf16 training steps of two full-size models on the CPU
def test_amp_cpu_prints_both_sizes_and_a_speed_up(capsys):
    amp_cpu.main(["--threads", "1", "--rounds", "1", "--batch-size", "2"])
    printed = capsys.readouterr().out
    assert "native bf16 flags:" in printed
    for name in ("MNIST 28x28", "MultiMNIST 36x36"):
        line = name + r": fp32 [0-9.]+ s/step, bf16 autocast [0-9.]+ s/step, speed-up [0-9.]+x"
        assert re.search(line, printed), printed


@pytest.mark.slow
def test_ddp_scaling_times_steps_without_start_up(capsys):
    rows = ddp_scaling.main(["--processes", "1", "--threads-total", "1", "--batches", "1", "2", "--batch-size", "4"])
    assert [row["processes"] for row in rows] == [1] and rows[0]["threads_each"] == 1
    assert "1 process(es) x 1 thread(s):" in capsys.readouterr().out
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        ddp_scaling.main(["--processes", "3", "--batch-size", "4"])
    with pytest.raises(ValueError, match="two different counts"):
        ddp_scaling.main(["--batches", "2", "2"])


def test_throughput_measures_either_model_with_any_routing(capsys):
    found = throughput.main(["--device", "cpu", "--model", "efficient-capsnet", "--routing", "em", "--batch-size", "4"]
                            + ["--steps", "1", "--threads", "1"])  # fmt: skip
    assert found["train"] > 0 and found["inference"] > 0 and found["epoch_seconds"] > 0
    assert "efficient-capsnet, routing em, batch 4 (fp32): training " in capsys.readouterr().out
    with pytest.raises(ValueError, match="model_name must be 'capsnet' or 'efficient-capsnet', got 'resnet'"):
        throughput.measure(torch.device("cpu"), 2, 1, model_name="resnet")
