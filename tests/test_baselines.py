"""capslib.baselines: the paper's baseline CNN, trained, checkpointed and evaluated like CapsNet."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Subset

import capslib
from capslib.baselines import BASELINES, MODEL_NAMES, PAPER_BASELINE, BaselineCNN, baseline_cnn
from capslib.evaluation.accuracy import evaluate
from capslib.pretrained import model_from_config
from capslib.training import TrainConfig, fit


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_papers_baseline_has_the_papers_35_4m_parameters():
    model = baseline_cnn("cnn-baseline")
    # 'same' padding, no pooling: the first fully connected layer sees 128 x 28 x 28 features
    assert model.classifier[0].in_features == 128 * 28 * 28
    assert count(model) == 35_445_522  # the paper: 35.4M
    assert [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)] == [256, 256, 128]
    assert [m.kernel_size for m in model.features if isinstance(m, torch.nn.Conv2d)] == [(5, 5)] * 3
    assert [m.out_features for m in model.classifier if isinstance(m, torch.nn.Linear)] == [328, 192, 10]
    assert isinstance(model.classifier[-2], torch.nn.Dropout)  # "connected with dropout" to the logits
    assert model.config["model"] == "cnn-baseline"


def test_the_small_baseline_is_small():
    model = baseline_cnn("cnn-small")
    assert count(model) == 1_059_602
    assert model.config["model"] == "cnn-small"
    assert MODEL_NAMES == ("capsnet", "efficient-capsnet", "cnn-baseline", "cnn-small")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_logits_for_a_batch_and_labels_are_ignored_but_checked(name):
    torch.manual_seed(0)
    model = baseline_cnn(name).eval()
    x = torch.rand(3, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (3, 10) and logits.dtype == torch.float32
    torch.testing.assert_close(model(x, torch.tensor([1, 2, 3])), logits)
    assert model(x.double()).dtype == torch.float32  # cast to the weights' dtype
    with pytest.raises(ValueError, match="labels"):
        model(x, torch.tensor([0, 1, 10]))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: baseline_cnn("resnet"), r"unknown baseline 'resnet'; expected one of \['cnn-baseline', 'cnn-small'\]"),
        (lambda: BaselineCNN(kernel_size=4), "kernel_size must be odd"),
        (lambda: BaselineCNN(dropout=1.0), r"dropout must lie in \[0, 1\)"),
        (lambda: BaselineCNN(channels=()), "at least one convolution"),
        (lambda: BaselineCNN(image_shape=(1, 4, 4), pool=True), "3 2x2 poolings need images of at least 8 px"),
        (lambda: model_from_config({"model": "vgg"}), "unknown model 'vgg' in the saved model_config"),
    ],
)
def test_bad_settings_say_what_was_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(2, 28, 28), r"images must have shape \(B, 1, 28, 28\), got \(2, 28, 28\)"),
        (torch.rand(2, 1, 32, 32), r"got \(2, 1, 32, 32\)"),
        (torch.randint(0, 255, (2, 1, 28, 28)), "floating point"),
    ],
)
def test_bad_images_raise(images, message):
    with pytest.raises(ValueError, match=message):
        baseline_cnn("cnn-small")(images)


def test_a_cnn_owns_its_loss_the_cross_entropy():
    model = baseline_cnn("cnn-small", num_classes=3)
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]]), torch.tensor([0, 2])
    total, classification, recon = model.loss(logits, torch.zeros(2, 1, 28, 28), labels, reconstruction_weight=0.5)
    expected = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(classification, expected)
    assert recon.item() == 0
    assert model.loss(logits.bfloat16(), None, labels).total.dtype == torch.float32  # fp32 under autocast too


@pytest.fixture(scope="module")
def tiny_data(mnist_train_set):
    train_set = mnist_train_set
    return Subset(train_set, range(300)), Subset(train_set, range(59000, 59100))


def tiny_config(out, **overrides) -> TrainConfig:
    settings = dict(
        model="cnn-small",
        epochs=2,
        batch_size=50,
        lr=1e-3,
        out_dir=str(out),
        tensorboard=False,
        progress=False,
        threads=1,
        seed=3,
    )
    return TrainConfig(**{**settings, **overrides})


def test_fit_trains_a_baseline_that_load_checkpoint_and_evaluate_read(tiny_data, tmp_path):
    train_set, val_set = tiny_data
    result = fit(None, train_set, val_set, tiny_config(tmp_path, epochs=5))
    history = result["history"]
    assert isinstance(result["model"], BaselineCNN)
    assert "train_cross_entropy_loss" in history[0] and "train_margin_loss" not in history[0]
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"], history
    assert history[-1]["val_accuracy"] > 0.5, history  # chance is 0.1; 1,500 images seen
    loaded = capslib.load_checkpoint(tmp_path / "best.pt")
    assert isinstance(loaded, BaselineCNN) and loaded.config == result["model"].config
    checked = evaluate(loaded, val_set, progress=False)
    assert checked.total == 100 and checked.accuracy == pytest.approx(result["best_val_accuracy"])


def test_a_baseline_run_resumes_exactly(tiny_data, tmp_path):
    train_set, val_set = tiny_data
    straight = fit(None, train_set, val_set, tiny_config(tmp_path / "straight"))
    out = tmp_path / "interrupted"
    fit(None, train_set, val_set, tiny_config(out, stop_after_batches=4))
    resumed = fit(None, train_set, val_set, tiny_config(out), resume=True)
    assert isinstance(resumed["model"], BaselineCNN)
    for key, value in straight["model"].state_dict().items():
        torch.testing.assert_close(resumed["model"].state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_resuming_a_baseline_run_keeps_its_model_whatever_the_call_says(tiny_data, tmp_path, capsys):
    """`--resume` without `--model cnn-small`: the run stays a cnn-small run (config.json too), and a note says so."""
    train_set, val_set = tiny_data
    fit(None, train_set, val_set, tiny_config(tmp_path, stop_after_batches=2))
    capsys.readouterr()
    asked = dict(model="capsnet", lr=0.5, out_dir=str(tmp_path), progress=False, tensorboard=False, threads=1)
    resumed = fit(None, train_set, val_set, TrainConfig(epochs=1, **asked), resume=True)
    assert isinstance(resumed["model"], BaselineCNN)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"] == "cnn-small" and saved["lr"] == 1e-3 and saved["epochs"] == 1  # epochs: the call's
    note = capsys.readouterr().out
    assert "model='cnn-small' (not 'capsnet')" in note and "lr=0.001 (not 0.5)" in note


def test_the_cli_trains_a_baseline(tiny_data, tmp_path, monkeypatch):
    import capslib.training.batches as batches
    from capslib.training.cli import main

    monkeypatch.setattr(batches, "load_dataset", lambda name, train=True: tiny_data[0] if train else None)
    result = main(
        [
            "--model",
            "cnn-small",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--val-size",
            "100",
            "--out",
            str(tmp_path),
            "--no-tensorboard",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert isinstance(result["model"], BaselineCNN)
    assert (tmp_path / "best.pt").exists()
    assert PAPER_BASELINE["channels"] == (256, 256, 128)


def test_a_baseline_exports_with_its_own_card_and_loads_by_name(tiny_data, tmp_path, monkeypatch):
    import capslib.evaluation.accuracy
    import capslib.evaluation.cards
    import capslib.evaluation.cli
    from capslib.data import datasets as data

    full_evaluate = capslib.evaluation.accuracy.evaluate  # the card's three passes, over 500 test images to save time
    for module in (capslib.evaluation.cli, capslib.evaluation.cards):
        monkeypatch.setattr(module, "evaluate", lambda *a, limit=None, **k: full_evaluate(*a, limit=limit or 500, **k))

    train_set, val_set = tiny_data
    fit(None, train_set, val_set, tiny_config(tmp_path / "run", epochs=1))
    capslib.evaluation.cli.main(
        [
            str(tmp_path / "run" / "best.pt"),
            "--device",
            "cpu",
            "--export",
            str(tmp_path / "pretrained"),
            "--name",
            "cnn_test_mnist",
            "--commit",
            "abc1234",
        ]
    )
    card = json.loads((tmp_path / "pretrained" / "cnn_test_mnist.json").read_text())
    assert card["name"] == "cnn_test_mnist" and card["test_images"] == 500
    assert card["description"].startswith("baseline CNN 'cnn-small'") and "1,059,602 parameters" in card["description"]
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    shipped = capslib.load_pretrained("cpu", name="cnn_test_mnist")
    assert isinstance(shipped, BaselineCNN) and not shipped.training
    assert next(shipped.parameters()).dtype == torch.float32


def test_the_shipped_baseline_loads_by_name_and_agrees_with_its_card():
    from capslib.evaluation.accuracy import TEST_SLICE, evaluate
    from capslib.pretrained import model_card

    model = capslib.load_pretrained("cpu", name="cnn_baseline_mnist")
    card = model_card("cnn_baseline_mnist")
    assert isinstance(model, BaselineCNN) and model.config["model"] == "cnn-small" and not model.training
    assert card["test_images"] == 10_000 and card["selected_by"].startswith("validation accuracy")
    sliced = evaluate(model, limit=TEST_SLICE, progress=False)  # the fp16 weights as shipped, loaded as fp32
    assert sliced.errors == card["test_slice_errors"]
