"""The paper's CapsNet: sizes, outputs, decoder masking, state dict, tracing, seeds and devices."""

from __future__ import annotations

import os
import random
import re

import numpy as np
import pytest
import torch

import capslib
from capslib import CapsNet, get_device, seed_everything, trace_shapes

# Frozen state-dict layout: checkpoints saved by earlier versions must keep loading.
STATE_DICT_LAYOUT = [
    ("conv1.weight", (256, 1, 9, 9)),
    ("conv1.bias", (256,)),
    ("primary_caps.inner.weight", (256, 256, 9, 9)),
    ("primary_caps.inner.bias", (256,)),
    ("digit_caps.weight", (1152, 10, 16, 8)),
    ("decoder.net.0.weight", (512, 160)),
    ("decoder.net.0.bias", (512,)),
    ("decoder.net.2.weight", (1024, 512)),
    ("decoder.net.2.bias", (1024,)),
    ("decoder.net.4.weight", (784, 1024)),
    ("decoder.net.4.bias", (784,)),
]


def make_model(seed: int = 0, **kwargs) -> CapsNet:
    torch.manual_seed(seed)
    model = CapsNet(**kwargs)
    with torch.no_grad():
        # A fresh init routes almost uniformly; larger transforms make routing (and R) matter.
        model.digit_caps.weight.mul_(30.0)
    return model


@pytest.fixture(scope="module")
def model() -> CapsNet:
    return make_model().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def eval_model(model):
    model.eval()
    yield model
    model.eval()
    model.routing_iterations = 3


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- size -----------------------------------------------------------------------------------------


def test_parameter_counts():
    assert count_parameters(CapsNet()) == 8_215_568
    assert count_parameters(CapsNet(reconstruction=False)) == 6_804_224
    assert CapsNet(reconstruction=False).decoder is None


def test_state_dict_layout_is_frozen():
    layout = [(key, tuple(value.shape)) for key, value in CapsNet().state_dict().items()]
    assert layout == STATE_DICT_LAYOUT
    no_decoder = [(key, tuple(value.shape)) for key, value in CapsNet(reconstruction=False).state_dict().items()]
    assert no_decoder == [row for row in STATE_DICT_LAYOUT if not row[0].startswith("decoder.")]


# --- outputs --------------------------------------------------------------------------------------


def test_output_fields_and_shapes(eval_model, images):
    with torch.no_grad():
        out = eval_model(images)
    assert isinstance(out, capslib.CapsNetOutput)
    assert out.lengths.shape == (3, 10)
    assert out.poses.shape == (3, 10, 16)
    assert out.reconstructions.shape == (3, 1, 28, 28)
    assert out.coupling.shape == (3, 1152, 10)
    assert out.trace is None and out.u_hat is None
    assert out.predictions.shape == (3,)
    assert torch.equal(out.predictions, out.lengths.argmax(dim=1))
    torch.testing.assert_close(out.coupling.sum(dim=2), torch.ones(3, 1152))

    with torch.no_grad():
        traced = eval_model(images, return_trace=True)
    assert len(traced.trace) == 3
    assert traced.u_hat.shape == (3, 1152, 10, 16)
    assert torch.equal(traced.trace[-1].v, traced.poses)
    assert torch.equal(traced.trace[-1].c, traced.coupling)
    torch.testing.assert_close(traced.lengths, out.lengths)


def test_model_without_decoder(images):
    model = make_model(reconstruction=False).train()
    out = model(images)  # no labels needed: nothing to mask
    assert out.reconstructions is None
    assert out.lengths.shape == (3, 10)


def test_lengths_are_pose_norms(eval_model, images):
    with torch.no_grad():
        out = eval_model(images)
    torch.testing.assert_close(out.lengths, out.poses.norm(dim=-1))
    assert (out.lengths >= 0).all() and (out.lengths < 1).all()
    # Not a softmax: the scores do not sum to one.
    assert not torch.allclose(out.lengths.sum(dim=1), torch.ones(3), atol=1e-3)


def test_model_output_matches_its_pieces(eval_model, images):
    """Forward = conv1 + ReLU -> PrimaryCaps -> RoutingCaps, nothing else in between."""
    with torch.no_grad():
        out = eval_model(images)
        u = eval_model.primary_caps(torch.relu(eval_model.conv1(images)))
        v, c = eval_model.digit_caps(u)
    torch.testing.assert_close(out.poses, v)
    torch.testing.assert_close(out.coupling, c)


# --- decoder masking ------------------------------------------------------------------------------


def test_train_mode_masks_with_true_labels(eval_model, images):
    eval_model.train()
    labels = torch.tensor([3, 7, 0])
    with torch.no_grad():
        out = eval_model(images, labels)
        expected = eval_model.decoder(out.poses, labels)
        other = eval_model.decoder(out.poses, (labels + 1) % 10)
    torch.testing.assert_close(out.reconstructions, expected)
    assert not torch.allclose(out.reconstructions, other)


def test_train_mode_without_labels_raises(eval_model, images):
    eval_model.train()
    with pytest.raises(ValueError, match="labels"):
        eval_model(images)


def test_eval_mode_masks_with_prediction_or_given_labels(eval_model, images):
    with torch.no_grad():
        out = eval_model(images)
        predicted = out.lengths.argmax(dim=1)
        torch.testing.assert_close(out.reconstructions, eval_model.decoder(out.poses, predicted))

        labels = (predicted + 1) % 10  # different from the prediction
        with_labels = eval_model(images, labels)
        torch.testing.assert_close(with_labels.reconstructions, eval_model.decoder(out.poses, labels))
    assert not torch.allclose(with_labels.reconstructions, out.reconstructions)
    torch.testing.assert_close(with_labels.lengths, out.lengths)  # labels only affect the decoder


# --- routing iterations ---------------------------------------------------------------------------


def test_routing_iterations_can_be_changed(eval_model, images):
    assert eval_model.routing_iterations == 3
    with torch.no_grad():
        three = eval_model(images, return_trace=True)
        eval_model.routing_iterations = 1
        one = eval_model(images, return_trace=True)
        eval_model.routing_iterations = 5
        five = eval_model(images, return_trace=True)
    assert eval_model.digit_caps.routing_iterations == 5
    assert [len(one.trace), len(three.trace), len(five.trace)] == [1, 3, 5]
    torch.testing.assert_close(one.coupling, torch.full_like(one.coupling, 0.1))
    assert (one.poses - three.poses).abs().max() > 1e-4
    assert (five.poses - three.poses).abs().max() > 1e-6


@pytest.mark.parametrize("value", [0, -2, 2.0, True])
def test_bad_routing_iterations_raise(eval_model, value):
    with pytest.raises(ValueError, match="iterations"):
        eval_model.routing_iterations = value
    assert eval_model.routing_iterations == 3
    with pytest.raises(ValueError):
        CapsNet(routing_iterations=value)


# --- state dict -----------------------------------------------------------------------------------


def test_state_dict_round_trip(eval_model, images, tmp_path):
    path = tmp_path / "capsnet.pt"
    torch.save(eval_model.state_dict(), path)
    fresh = CapsNet()  # different random weights
    state = torch.load(path, weights_only=True)
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    with torch.no_grad():
        expected = eval_model(images)
        got = fresh(images)
    assert torch.equal(got.lengths, expected.lengths)
    assert torch.equal(got.poses, expected.poses)
    assert torch.equal(got.reconstructions, expected.reconstructions)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(2, 28, 28),  # no channel axis
        torch.zeros(2, 1, 32, 32),  # wrong size for the default model
        torch.zeros(2, 3, 28, 28),  # wrong channels
        torch.zeros(2, 1, 28, 28, dtype=torch.uint8),  # integer images
        torch.zeros(2, 1, 28, 28, dtype=torch.int64),
    ],
    ids=["rank", "size", "channels", "uint8", "int64"],
)
def test_bad_images_raise(eval_model, x):
    with pytest.raises(ValueError, match="images"):
        eval_model(x)


def test_integer_images_say_how_to_convert(eval_model):
    with pytest.raises(ValueError, match=r"floating point.*x.float\(\) / 255"):
        eval_model(torch.full((2, 1, 28, 28), 255, dtype=torch.uint8))


@pytest.mark.parametrize(
    "transform, expected",
    [
        (lambda x: x * 255, r"got values from 0 to 255: .*divide by 255"),
        (lambda x: (x - 0.1307) / 0.3081, r"standard-normalised MNIST.*capslib normalises nothing"),
    ],
    ids=["0-255", "standardised"],
)
def test_images_outside_zero_one_raise(eval_model, transform, expected):
    """The two usual mistakes run without error but lose accuracy: refuse them, saying the fix."""
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    images[0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # the full range, as in a real digit
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\].*" + expected):
        eval_model(transform(images))


def test_non_finite_images_raise(eval_model, images):
    broken = images.clone()
    broken[1, 0, 3, 4] = float("nan")
    broken[2, 0, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"images must be finite, got 2 non-finite values \(1 NaN, 1 infinite\)"):
        eval_model(broken)


def test_image_values_are_checked_on_the_cpu_only(eval_model):
    """Off the CPU a value check would read the batch back every step: only dtype and shape there."""
    eval_model.check_images(torch.empty(2, 1, 28, 28, device="meta"))  # values unreadable, none read
    with pytest.raises(ValueError, match="shape"):
        eval_model.check_images(torch.empty(2, 1, 27, 28, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_float_images_of_any_precision_are_cast_to_the_model(eval_model, images, dtype):
    given = images.to(dtype)
    with torch.no_grad():
        got = eval_model(given)
        expected = eval_model(given.float())  # what the cast makes of them
    assert got.lengths.dtype == torch.float32
    assert torch.equal(got.lengths, expected.lengths)
    assert torch.equal(got.reconstructions, expected.reconstructions)


def test_float32_images_into_a_double_model(images):
    model = make_model(conv_channels=16, num_types=4, in_dim=6, out_dim=7).double().eval()
    with torch.no_grad():
        got = model(images)
        expected = model(images.double())
    assert got.lengths.dtype == torch.float64
    assert torch.equal(got.lengths, expected.lengths)


def test_autocast_still_decides_the_convolution_dtype(eval_model, images):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = eval_model(images.double())
        expected = eval_model(images)
    torch.testing.assert_close(got.lengths, expected.lengths, rtol=0, atol=0)


@pytest.mark.parametrize("implementation", ["reference", "fused", "auto"])
@pytest.mark.parametrize("return_trace", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("reconstruction", [True, False])
def test_empty_batch_gives_empty_outputs(implementation, return_trace, training, reconstruction):
    """B = 0 is one behaviour on every path: empty outputs of the right shapes, never an error."""
    small = dict(conv_channels=16, num_types=4, in_dim=6, out_dim=7)
    model = make_model(routing_implementation=implementation, reconstruction=reconstruction, **small).train(training)
    x = torch.zeros(0, 1, 28, 28)
    y = torch.zeros(0, dtype=torch.long) if training else None
    if implementation == "fused" and return_trace:  # the fused path keeps no trace: it says so
        with pytest.warns(UserWarning, match="reference routing runs instead"):
            out = model(x, y, return_trace=return_trace)
    else:
        out = model(x, y, return_trace=return_trace)
    num_in = 4 * 6 * 6
    assert out.lengths.shape == (0, 10) and out.poses.shape == (0, 10, 7)
    assert out.coupling.shape == (0, num_in, 10) and out.predictions.shape == (0,)
    assert out.reconstructions is None if not reconstruction else out.reconstructions.shape == (0, 1, 28, 28)
    if return_trace:
        assert len(out.trace) == 3 and out.u_hat.shape == (0, num_in, 10, 7)
        assert [step.c.shape for step in out.trace] == [(0, num_in, 10)] * 3
    else:
        assert out.trace is None
    if training:  # and the backward pass of nothing runs, giving zero gradients
        (out.lengths.sum() + (0 if out.reconstructions is None else out.reconstructions.sum())).backward()
        assert torch.equal(model.digit_caps.weight.grad, torch.zeros_like(model.digit_caps.weight))


@pytest.mark.parametrize(
    "labels",
    [torch.tensor([0, 10, 1]), torch.tensor([-1, 0, 1]), torch.tensor([0, 1]), torch.tensor([0.0, 1.0, 2.0])],
    ids=["ten", "negative", "length", "float"],
)
def test_bad_labels_raise(eval_model, images, labels):
    with pytest.raises(ValueError, match="labels"):
        eval_model(images, labels)
    eval_model.train()
    with pytest.raises(ValueError, match="labels"):
        eval_model(images, labels)


# --- tracing --------------------------------------------------------------------------------------


def find_row(table, keyword: str) -> tuple[int, ...]:
    matches = [shape for stage, shape, _ in table.rows if keyword in stage]
    assert matches, f"no row mentioning {keyword!r} in\n{table}"
    return tuple(matches[0])


@pytest.mark.parametrize("training", [False, True])
def test_trace_shapes(eval_model, images, training):
    eval_model.train(training)
    table = trace_shapes(eval_model, images[:2])
    assert eval_model.training is training

    assert table.rows[0][0] == "input" and tuple(table.rows[0][1]) == (2, 1, 28, 28)
    assert find_row(table, "conv1") == (2, 256, 20, 20)
    assert find_row(table, "primary capsules") == (2, 1152, 8)
    assert find_row(table, "u_hat") == (2, 1152, 10, 16)
    assert find_row(table, "lengths") == (2, 10)
    assert find_row(table, "reconstruction") == (2, 1, 28, 28)

    routing_rows = [(re.match(r"routing (\d+): ([bcsv])\b", stage), shape) for stage, shape, _ in table.rows]
    routing_rows = [(int(m.group(1)), m.group(2), tuple(shape)) for m, shape in routing_rows if m]
    expected = []
    for r in (1, 2, 3):
        expected += [(r, "b", (2, 1152, 10)), (r, "c", (2, 1152, 10)), (r, "s", (2, 10, 16)), (r, "v", (2, 10, 16))]
    assert routing_rows == expected

    text = str(table)
    assert len(text.splitlines()) == len(table.rows) + 2  # header, rule, one line per row
    assert "(2, 1152, 10, 16)" in text
    html_table = table._repr_html_()
    assert html_table.startswith("<table>") and html_table.endswith("</table>")
    assert html_table.count("<tr>") == len(table.rows) + 1
    assert table["input"] == (2, 1, 28, 28)


def test_trace_shapes_follow_routing_iterations(eval_model, images):
    eval_model.routing_iterations = 2
    table = trace_shapes(eval_model, images[:1])
    assert sum(1 for stage, _, _ in table.rows if re.match(r"routing \d+: v\b", stage)) == 2


# --- other configurations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_shape, num_classes, grid",
    [((1, 32, 32), 10, (8, 8)), ((1, 28, 28), 3, (6, 6)), ((3, 30, 26), 5, (7, 5))],
)
def test_other_image_shapes_and_class_counts(image_shape, num_classes, grid):
    torch.manual_seed(0)
    model = CapsNet(
        image_shape=image_shape, num_classes=num_classes, conv_channels=16, num_types=4, in_dim=6, out_dim=7
    )
    num_in = 4 * grid[0] * grid[1]
    assert model.primary_grid == grid
    assert model.digit_caps.weight.shape == (num_in, num_classes, 7, 6)
    x = torch.rand(2, *image_shape)
    labels = torch.tensor([0, num_classes - 1])
    out = model(x, labels)
    assert out.lengths.shape == (2, num_classes)
    assert out.poses.shape == (2, num_classes, 7)
    assert out.coupling.shape == (2, num_in, num_classes)
    assert out.reconstructions.shape == (2, *image_shape)
    table = trace_shapes(model, x)
    assert find_row(table, "primary capsules") == (2, num_in, 6)
    with pytest.raises(ValueError, match="labels"):
        model(x, torch.tensor([0, num_classes]))


def test_default_sized_model_on_32x32_images():
    torch.manual_seed(0)
    model = CapsNet(image_shape=(1, 32, 32)).eval()
    assert model.digit_caps.weight.shape == (2048, 10, 16, 8)
    with torch.no_grad():
        out = model(torch.rand(1, 1, 32, 32))
    assert out.reconstructions.shape == (1, 1, 32, 32)
    assert out.coupling.shape == (1, 2048, 10)


def test_too_small_images_raise():
    with pytest.raises(ValueError, match="too small"):
        CapsNet(image_shape=(1, 16, 16))


# --- seeds and devices ----------------------------------------------------------------------------


def test_seed_everything_repeats_random_streams():
    seed_everything(123)
    first = (torch.rand(5), np.random.rand(3), random.random())
    seed_everything(123)
    second = (torch.rand(5), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]
    seed_everything(124)
    assert not torch.equal(torch.rand(5), first[0])


def test_seed_everything_leaves_the_environment_alone(monkeypatch):
    """PYTHONHASHSEED set from inside a running interpreter changes nothing but what child processes inherit."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    before = dict(os.environ)
    seed_everything(5)
    assert dict(os.environ) == before


def test_seed_everything_repeats_model_init():
    seed_everything(7)
    a = CapsNet(reconstruction=False).digit_caps.weight
    seed_everything(7)
    b = CapsNet(reconstruction=False).digit_caps.weight
    assert torch.equal(a, b)


def _no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_get_device_auto_falls_back_to_cpu(monkeypatch):
    _no_accelerators(monkeypatch)
    assert get_device("auto") == torch.device("cpu")
    assert get_device(None) == torch.device("cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")


def test_get_device_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device("auto") == torch.device("cuda")


def test_get_device_here():
    if torch.cuda.is_available():
        assert get_device("auto").type == "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        assert get_device("auto").type == "mps"
    else:
        assert get_device("auto") == torch.device("cpu")


def test_get_device_unavailable_or_unknown_raises(monkeypatch):
    _no_accelerators(monkeypatch)
    with pytest.raises(ValueError, match="cuda"):
        get_device("cuda")
    with pytest.raises(ValueError, match="cuda"):
        get_device(torch.device("cuda", 0))
    with pytest.raises(ValueError, match="mps"):
        get_device("mps")
    with pytest.raises(ValueError):
        get_device("tpu-please")


def test_capsnet_owns_its_loss_margin_plus_weighted_reconstruction(eval_model, images):
    """Eq. 4 plus 0.0005 x the squared error (Section 4.1), in fp32; 0 reconstruction without a decoder;
    one target per digit for (B, K) labels (MultiMNIST)."""
    from capslib.functional import margin_loss, reconstruction_loss

    labels = torch.arange(len(images)) % 10  # (B,)
    with torch.no_grad():
        out = eval_model(images, labels)
    total, margin, recon = eval_model.loss(out, images, labels, reconstruction_weight=0.01)
    torch.testing.assert_close(margin, margin_loss(out.lengths, labels))
    torch.testing.assert_close(recon, reconstruction_loss(out.reconstructions, images))
    torch.testing.assert_close(total, margin + 0.01 * recon)
    assert eval_model.loss(out, images, labels).total == pytest.approx((margin + 0.0005 * recon).item())
    no_decoder = make_model(reconstruction=False).eval()
    with torch.no_grad():
        plain = no_decoder.loss(no_decoder(images), images, labels)
    assert plain.reconstruction.item() == 0 and plain.total == plain.classification
    pairs = torch.stack([labels, (labels + 1) % 10], dim=1)  # (B, 2)
    with torch.no_grad():
        both = eval_model(images, pairs)
    targets = torch.stack([images, images], dim=1)  # (B, 2, C, H, W)
    assert eval_model.loss(both, targets, pairs).reconstruction > 0
