"""Training on MultiMNIST: pairs made on the fly, two targets, one reconstruction per digit."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

import capslib
import capslib.training.step as step_module
from capslib.evaluation.predict import accuracy
from capslib.training import TrainConfig, fit
from capslib.training.batches import load_data
from capslib.training.prepare import build_model


@pytest.fixture(scope="module")
def digits(mnist_train_set):
    train_set = mnist_train_set
    return Subset(train_set, range(200)), Subset(train_set, range(59000, 59060))


def tiny_capsnet() -> capslib.CapsNet:
    torch.manual_seed(5)
    return capslib.CapsNet(image_shape=(1, 36, 36), conv_channels=16, num_types=4, in_dim=8, out_dim=8)


def config(out, **overrides) -> TrainConfig:
    settings = dict(
        dataset="multimnist",
        epochs=2,
        batch_size=40,
        out_dir=str(out),
        tensorboard=False,
        progress=False,
        threads=1,
        seed=11,
    )
    return TrainConfig(**{**settings, **overrides})


def test_a_step_sees_pairs_and_redraws_each_digit(digits, tmp_path, monkeypatch):
    seen = []
    step = step_module.train_step

    def spy(model, optimizer, images, labels, *args, targets=None, **kwargs):
        seen.append((images.shape, labels.shape, None if targets is None else targets.shape))
        assert (labels[:, 0] != labels[:, 1]).all()
        torch.testing.assert_close(images, targets.sum(dim=1).clamp(0, 1))  # the input is the two targets added
        return step(model, optimizer, images, labels, *args, targets=targets, **kwargs)

    monkeypatch.setattr(step_module, "train_step", spy)
    result = fit(tiny_capsnet(), *digits, config(tmp_path, epochs=1))
    assert seen == [((40, 1, 36, 36), (40, 2), (40, 2, 1, 36, 36))] * 5  # 200 digits, each first once
    record = result["history"][0]
    assert 0 <= record["val_accuracy"] <= 1 and record["train_reconstruction_loss"] > 0


def test_multimnist_training_resumes_exactly(digits, tmp_path):
    straight = fit(tiny_capsnet(), *digits, config(tmp_path / "straight"))
    out = tmp_path / "stopped"
    fit(tiny_capsnet(), *digits, config(out, stop_after_batches=3))
    resumed = fit(None, *digits, config(out), resume=True)
    assert resumed["model"].image_shape == (1, 36, 36)
    for key, value in straight["model"].state_dict().items():
        torch.testing.assert_close(resumed["model"].state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert [h["val_accuracy"] for h in resumed["history"]] == [h["val_accuracy"] for h in straight["history"]]


def test_the_default_multimnist_model_is_a_36x36_capsnet_and_cnns_are_refused(tmp_path):
    model = build_model(None, config(tmp_path), None)
    assert isinstance(model, capslib.CapsNet) and model.image_shape == (1, 36, 36)
    with pytest.raises(ValueError, match="--dataset multimnist trains a CapsNet"):
        build_model(None, config(tmp_path, model="cnn-small"), None)


def test_validation_pairs_are_fixed_and_both_digits_must_be_right(digits):
    data = load_data(*digits, config("unused"), 10, torch.device("cpu"))
    again = load_data(*digits, config("unused"), 10, torch.device("cpu"))
    assert data.val_x.shape == (60, 1, 36, 36) and data.val_y.shape == (60, 2)
    assert torch.equal(data.val_x, again.val_x) and data.train_x.shape == (200, 1, 28, 28)

    labels = data.val_y
    wrong = torch.tensor([next(k for k in range(10) if k not in pair) for pair in labels.tolist()])  # (60,)

    class Oracle(torch.nn.Module):  # the two labels on top for the first half; one label and a wrong class after
        def forward(self, x):
            scores = torch.zeros(len(x), 10)
            scores[torch.arange(60), labels[:, 0]] = 2.0
            scores[torch.arange(30), labels[:30, 1]] = 1.0
            scores[torch.arange(30, 60), wrong[30:]] = 1.0
            return scores

    assert accuracy(Oracle(), data.val_x, data.val_y, batch_size=60, device=torch.device("cpu")) == 0.5


@pytest.mark.slow
def test_export_writes_a_card_whose_accuracy_the_loaded_model_reproduces(digits, tmp_path, monkeypatch, capsys):
    """`evaluate --dataset multimnist --export`: fp16 weights + a card with the both-right accuracy on
    the fixed test pairs, which the shipped model, loaded back, scores again."""
    import capslib.evaluation.accuracy as evaluate
    import capslib.pretrained as pretrained
    from capslib.evaluation.cli import main

    fit(tiny_capsnet(), *digits, config(tmp_path / "run", epochs=1))
    shipped = tmp_path / "pretrained"
    main([str(tmp_path / "run" / "best.pt"), "--dataset", "multimnist", "--export", str(shipped), "--name", "mm"])
    assert "exported" in capsys.readouterr().out
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: shipped)
    card = pretrained.model_card("mm")
    assert card["test_pairs"] == 10_000 and card["model_config"]["image_shape"] == [1, 36, 36]
    assert card["selected_epoch"] == 1 and card["pairs_seen"] == 200  # one epoch: each of the 200 digits first once
    history = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["history"]
    assert card["train_seconds"] == round(history[0]["elapsed_seconds"], 1) > 0  # the run's time to that epoch
    model = capslib.load_pretrained("cpu", name="mm")
    again = evaluate.evaluate_multimnist(model, progress=False)
    assert again.both_right == card["test_both_right"]
    assert card["test_errors"] == round((1 - again.both_right) * 10_000)
    assert 0 <= card["test_both_right"] <= card["test_at_least_one_right"] <= 1
