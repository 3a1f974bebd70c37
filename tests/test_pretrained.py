"""The shipped model: it loads, and it measures what its card says, on the real test set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import capslib
from capslib.evaluate import TEST_SLICE, evaluate
from capslib.pretrained import model_card, pretrained_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model():
    return capslib.load_pretrained(device="cpu")


def test_card_has_what_a_reader_needs():
    card = model_card()
    for key in (
        "data",
        "epochs_trained",
        "train_seconds",
        "hardware",
        "seed",
        "commit",
        "test_accuracy",
        "test_errors",
        "test_slice_errors",
        "model_config",
        "selected_by",
    ):
        assert key in card, key
    assert card["test_images"] == 10_000
    assert card["test_accuracy"] == pytest.approx(1 - card["test_errors"] / 10_000)


def test_shipped_file_is_half_precision():
    weights = pretrained_dir() / "capsnet_mnist.pt"
    state = torch.load(weights, weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert 16.0e6 < weights.stat().st_size < 17.0e6


def test_loads_for_inference(model):
    assert isinstance(model, capslib.CapsNet) and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert model.routing_iterations == 3 and model.decoder is not None


def test_error_count_on_fixed_test_slice_matches_card(model):
    result = evaluate(model, limit=TEST_SLICE, progress=False)
    assert result.total == TEST_SLICE
    assert abs(result.errors - model_card()["test_slice_errors"]) <= 1


@pytest.mark.slow
def test_full_test_set_matches_card(model):
    result = evaluate(model, progress=False)
    assert result.total == 10_000
    assert abs(result.errors - model_card()["test_errors"]) <= 1


def test_missing_weights_say_where(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSNET_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "pretrained")):
        capslib.load_pretrained()


def test_evaluate_counts_everything():
    """Confusion matrix, per-class accuracy and error count agree, on every image given."""

    class Fixed(torch.nn.Module):  # predicts class (sum of pixels > 0) : 0 or 1
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            lengths = torch.zeros(len(x), 3)
            lengths[torch.arange(len(x)), (x.flatten(1).sum(dim=1) > 0).long()] = 1.0
            return type("Out", (), {"lengths": lengths})()

    images = torch.zeros(7, 1, 2, 2)
    images[:3] = 1.0  # predicted 1
    labels = torch.tensor([1, 1, 2, 0, 0, 0, 2])  # 2 right of 3; 3 right of 4: 2 errors
    result = evaluate(Fixed(), TensorDataset(images, labels), batch_size=2, progress=False)
    assert result.total == 7 and result.errors == 2
    assert result.confusion.sum() == 7
    assert result.confusion[0, 0] == 3 and result.confusion[2, 1] == 1 and result.confusion[2, 0] == 1
    torch.testing.assert_close(result.per_class_accuracy, torch.tensor([1.0, 1.0, 0.0]))


@pytest.mark.slow
def test_evaluate_cli_on_shipped_model(tmp_path):
    figure = tmp_path / "cm.png"
    out = subprocess.run(
        [sys.executable, "-m", "capslib.evaluate", "pretrained", "--device", "cpu", "--figure", str(figure)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert f"({model_card()['test_errors']} errors in 10000 images)" in out
    assert figure.stat().st_size > 10_000


def test_checkpoint_with_the_older_argument_names_loads(tmp_path):
    """Checkpoints name CapsNet's arguments as they were when saved: primary_types/primary_dim/class_dim."""
    torch.manual_seed(0)
    model = capslib.CapsNet(conv_channels=16, num_types=4, in_dim=6, out_dim=7)
    old_config = dict(model.config)
    for old, new in (("primary_types", "num_types"), ("primary_dim", "in_dim"), ("class_dim", "out_dim")):
        old_config[old] = old_config.pop(new)
    torch.save({"model": model.state_dict(), "model_config": old_config}, tmp_path / "old.pt")
    loaded = capslib.load_checkpoint(tmp_path / "old.pt", device="cpu")
    assert (loaded.primary_caps.num_types, loaded.primary_caps.in_dim, loaded.digit_caps.out_dim) == (4, 6, 7)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x).lengths, model.eval()(x).lengths)
