"""PrimaryCaps capsule layout and custom inner networks; Decoder masking."""

from __future__ import annotations

import pytest
import torch
from reference import squash_formula
from torch import nn

import capslib.layers
from capslib import Decoder, PrimaryCaps

TYPES, DIM, GRID = 32, 8, 6  # the paper's MNIST primary capsules: 32 types x 8D on a 6x6 grid


class FixedOutput(nn.Module):
    """An inner network that ignores its input and returns a stored ``(B, T*D, H', W')`` tensor."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.output


def primary_with_fixed_output(output: torch.Tensor) -> PrimaryCaps:
    return PrimaryCaps(num_types=TYPES, in_dim=DIM, inner=FixedOutput(output))


def conv_output(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, TYPES * DIM, GRID, GRID, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


FEATURES = torch.zeros(2, 256, 20, 20)  # ignored by FixedOutput

# (type t, component d, row, col)
POSITIONS = [(0, 0, 0, 0), (0, 7, 0, 1), (1, 0, 0, 0), (5, 3, 2, 4), (31, 7, 5, 5), (17, 1, 4, 0)]


@pytest.mark.parametrize("t, d, row, col", POSITIONS)
def test_primary_caps_one_channel_one_position_changes_one_component(monkeypatch, t, d, row, col):
    """Before the squash, channel t*8+d at (row, col) is component d of capsule t*36 + row*6 + col."""
    monkeypatch.setattr(capslib.layers, "squash", lambda u, dim: u)  # look at the pre-squash values
    base = conv_output()
    changed = base.clone()
    changed[1, t * DIM + d, row, col] += 10.0

    diff = primary_with_fixed_output(changed)(FEATURES) - primary_with_fixed_output(base)(FEATURES)
    assert diff.shape == (2, TYPES * GRID * GRID, DIM)
    nonzero = diff.nonzero().tolist()
    assert nonzero == [[1, t * GRID * GRID + row * GRID + col, d]]


@pytest.mark.parametrize("t, d, row, col", POSITIONS)
def test_primary_caps_one_channel_one_position_changes_one_capsule(t, d, row, col):
    base = conv_output(seed=1)
    changed = base.clone()
    changed[0, t * DIM + d, row, col] += 10.0

    before = primary_with_fixed_output(base)(FEATURES)
    after = primary_with_fixed_output(changed)(FEATURES)
    capsule = t * GRID * GRID + row * GRID + col
    touched = (after - before).abs().amax(dim=-1) > 0  # (B, N_in)
    assert touched.nonzero().tolist() == [[0, capsule]]


def test_primary_caps_full_layout():
    """Capsule t*36 + row*6 + col is the squash of channels t*8 .. t*8+7 at (row, col)."""
    out = conv_output(seed=2)
    caps = primary_with_fixed_output(out)(FEATURES)
    for t in (0, 1, 13, 31):
        for row, col in ((0, 0), (0, 5), (3, 2), (5, 5)):
            expected = squash_formula(out[:, t * DIM : (t + 1) * DIM, row, col])  # (B, D)
            torch.testing.assert_close(caps[:, t * GRID * GRID + row * GRID + col], expected)
    assert (caps.norm(dim=-1) < 1).all()


def test_primary_caps_default_shape():
    torch.manual_seed(0)
    layer = PrimaryCaps()
    caps = layer(torch.randn(2, 256, 20, 20))
    assert caps.shape == (2, 1152, 8)
    assert (caps.norm(dim=-1) < 1).all()


def test_primary_caps_custom_inner_network():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(16, 24, kernel_size=3), nn.ReLU(), nn.Conv2d(24, 4 * 5, kernel_size=3, stride=2))
    layer = PrimaryCaps(in_channels=16, num_types=4, in_dim=5, inner=inner)
    features = torch.randn(3, 16, 13, 13)
    caps = layer(features)  # grid: 13 -> 11 -> 5
    assert caps.shape == (3, 4 * 5 * 5, 5)
    assert (caps.norm(dim=-1) < 1).all()
    # The same layout rule as the default: capsule t*25 + row*5 + col <- channels t*5 .. t*5+4.
    raw = inner(features)
    torch.testing.assert_close(caps[:, 2 * 25 + 3 * 5 + 1], capslib.squash(raw[:, 10:15, 3, 1], dim=-1))
    assert layer.inner is inner


def test_primary_caps_inner_with_wrong_channels_raises():
    layer = PrimaryCaps(in_channels=16, num_types=4, in_dim=5, inner=nn.Conv2d(16, 19, kernel_size=3))
    with pytest.raises(ValueError, match="20"):
        layer(torch.randn(1, 16, 9, 9))


def test_primary_caps_wrong_input_rank_raises():
    with pytest.raises(ValueError, match="B, C, H, W"):
        PrimaryCaps()(torch.zeros(256, 20, 20))


# --- Decoder --------------------------------------------------------------------------------------


@pytest.fixture
def small_decoder() -> Decoder:
    torch.manual_seed(0)
    return Decoder(out_capsules=4, out_dim=3, image_shape=(1, 5, 6), hidden=(8, 16))


def test_decoder_shape_and_gradient_reaches_only_the_chosen_capsule(small_decoder):
    """The reconstruction loss trains the pose of the masked-in capsule and no other one."""
    poses = (5 * torch.randn(7, 4, 3, generator=torch.Generator().manual_seed(5))).requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    out = small_decoder(poses, labels)
    assert out.shape == (7, 1, 5, 6)
    (grad,) = torch.autograd.grad(((out - 0.5) ** 2).sum(), poses)  # (7, 4, 3)
    chosen = torch.nn.functional.one_hot(labels, 4).bool()  # (7, 4)
    assert torch.equal(grad[~chosen], torch.zeros_like(grad[~chosen]))
    assert (grad[chosen].norm(dim=-1) > 0).all()


def test_decoder_pixel_layout_is_channel_row_column():
    """Output feature ``c*H*W + h*W + w`` of the last layer is pixel ``(c, h, w)``."""
    decoder = Decoder(out_capsules=2, out_dim=3, image_shape=(2, 3, 4), hidden=(5,))
    last = decoder.net[-2]  # the Linear before the sigmoid
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-20.0)
        last.bias[1 * 12 + 2 * 4 + 3] = 20.0  # pixel (1, 2, 3)
    out = decoder(torch.randn(1, 2, 3), torch.tensor([1]))[0]  # (2, 3, 4)
    expected = torch.zeros(2, 3, 4)
    expected[1, 2, 3] = 1.0
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_decoder_default_shape():
    torch.manual_seed(0)
    decoder = Decoder()
    out = decoder(torch.randn(2, 10, 16), torch.tensor([3, 9]))
    assert out.shape == (2, 1, 28, 28)
    widths = [m.out_features for m in decoder.net if isinstance(m, nn.Linear)]
    assert widths == [512, 1024, 784]


def test_decoder_uses_only_the_chosen_capsule(small_decoder):
    torch.manual_seed(1)
    poses = torch.randn(2, 4, 3)
    labels = torch.tensor([2, 0])
    reference_out = small_decoder(poses, labels)

    others = poses.clone()
    others[0, [0, 1, 3]] = torch.randn(3, 3) * 10
    others[1, 1:] = torch.randn(3, 3) * 10
    assert torch.equal(small_decoder(others, labels), reference_out)

    chosen = poses.clone()
    chosen[0, 2] += 1.0
    changed = small_decoder(chosen, labels)
    assert not torch.allclose(changed[0], reference_out[0])
    assert torch.equal(changed[1], reference_out[1])  # per example


def test_decoder_mask_equals_zeroing_other_capsules(small_decoder):
    torch.manual_seed(2)
    poses = torch.randn(3, 4, 3)
    labels = torch.tensor([1, 3, 0])
    masked = torch.zeros_like(poses)
    masked[torch.arange(3), labels] = poses[torch.arange(3), labels]
    expected = small_decoder.net(masked.flatten(start_dim=1)).view(3, 1, 5, 6)
    torch.testing.assert_close(small_decoder(poses, labels), expected)


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([0, 4]),
        torch.tensor([-1, 0]),
        torch.tensor([0.0, 1.0]),
        torch.tensor([0, 1, 2]),
        torch.tensor([[0, 1]]),
    ],
    ids=["out-of-range", "negative", "float", "length", "2d"],
)
def test_decoder_bad_labels_raise(small_decoder, labels):
    with pytest.raises(ValueError, match="labels"):
        small_decoder(torch.zeros(2, 4, 3), labels)


def test_decoder_bad_poses_raise(small_decoder):
    with pytest.raises(ValueError, match=r"\(B, 4, 3\)"):
        small_decoder(torch.zeros(2, 4, 5), torch.tensor([0, 1]))


def test_empty_batch_through_each_layer(small_decoder):
    """B = 0 flows through every layer as empty tensors of the right shapes (see test_model)."""
    assert PrimaryCaps(16, num_types=2, in_dim=3)(torch.zeros(0, 16, 13, 13)).shape == (0, 2 * 3 * 3, 3)
    assert small_decoder(torch.zeros(0, 4, 3), torch.zeros(0, dtype=torch.long)).shape == (0, 1, 5, 6)
    layer = capslib.layers.RoutingCaps(in_capsules=6, in_dim=3, out_capsules=4, out_dim=2)
    for implementation in capslib.ROUTING_IMPLEMENTATIONS:
        layer.routing_implementation = implementation
        v, c = layer(torch.zeros(0, 6, 3))
        assert v.shape == (0, 4, 2) and c.shape == (0, 6, 4), implementation
