"""Efficient-CapsNet (capslib.EfficientCapsNet): the paper's size, every routing algorithm in the
same network, the training command, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

import capslib
from capslib.efficient_capsnet import ITERATIVE_ROUTINGS
from capslib.pretrained import model_from_config
from capslib.routing_algorithms import ROUTING_ALGORITHMS
from capslib.training import TrainConfig, fit
from capslib.training.cli import build_parser, config_from_args


def test_the_paper_network_has_the_papers_161824_parameters():
    """Mazzia et al. 2021 report 161,824 trainable parameters for MNIST (the decoder not counted)."""
    model = capslib.EfficientCapsNet(reconstruction=False)
    assert sum(p.numel() for p in model.parameters()) == 161_824
    assert model.routing == "self_attention" and model.routing_iterations == 1
    with_decoder = capslib.EfficientCapsNet()
    decoder = sum(p.numel() for p in with_decoder.decoder.parameters())
    assert sum(p.numel() for p in with_decoder.parameters()) == 161_824 + decoder


@pytest.mark.parametrize("routing", list(ROUTING_ALGORITHMS))
def test_every_routing_algorithm_runs_in_the_same_network(routing):
    torch.manual_seed(0)
    model = capslib.EfficientCapsNet(routing=routing)
    assert model.routing == routing
    assert model.routing_iterations == (3 if routing in ITERATIVE_ROUTINGS else 1)
    x, y = torch.rand(5, 1, 28, 28), torch.arange(5)
    out = model(x, y)  # training mode: the decoder masked by the true labels
    assert out.lengths.shape == (5, 10) and out.poses.shape == (5, 10, 16)
    assert out.coupling.shape == (5, 16, 10) and out.reconstructions.shape == (5, 1, 28, 28)
    torch.testing.assert_close(out.coupling.sum(dim=2), torch.ones(5, 16))
    loss = model.loss(out, x, y).total
    loss.backward()
    assert torch.isfinite(loss)
    learned = [p for p in model.digit_caps.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learned)
    traced = model.eval()(x, return_trace=True)
    assert len(traced.trace) == model.routing_iterations and traced.u_hat.shape == (5, 16, 10, 16)


def test_each_example_is_classified_on_its_own_in_eval_mode():
    torch.manual_seed(1)
    model = capslib.EfficientCapsNet(routing="em").eval()
    x = torch.rand(4, 1, 28, 28)
    together = model(x).lengths
    alone = torch.cat([model(x[k : k + 1]).lengths for k in range(4)])
    torch.testing.assert_close(together, alone)


def test_bad_arguments_are_a_clear_value_error():
    with pytest.raises(ValueError, match="routing must be one of .*got 'attention'"):
        capslib.EfficientCapsNet(routing="attention")
    with pytest.raises(ValueError, match=r"layers take 28x28 images, got image_shape \(1, 36, 36\)"):
        capslib.EfficientCapsNet(image_shape=(1, 36, 36))
    with pytest.raises(ValueError, match="routing iterations must be an integer >= 1"):
        capslib.EfficientCapsNet(routing_iterations=0)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 28, 28\)"):
        capslib.EfficientCapsNet().eval()(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("routing", ["self_attention", "em"])
def test_the_saved_config_rebuilds_the_same_model(routing):
    model = capslib.EfficientCapsNet(routing=routing)
    rebuilt = model_from_config(dict(model.config))
    assert type(rebuilt) is capslib.EfficientCapsNet and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(rebuilt.eval()(x).lengths, model.eval()(x).lengths)


def test_the_training_command_takes_the_model_and_the_routing(tmp_path):
    args = build_parser().parse_args(["--model", "efficient-capsnet", "--routing", "dynamic", "--out", str(tmp_path)])
    config = config_from_args(args)
    assert (config.model, config.routing) == ("efficient-capsnet", "dynamic")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--routing", "attention"])
    with pytest.raises(ValueError, match="routing must be one of"):
        TrainConfig(routing="attention").validate()


def test_efficient_capsnet_learns_real_digits_and_reloads(mnist_train_set, tmp_path):
    """600 real digits, 2 epochs: validation far above chance; best.pt reloads as the same network."""
    train_set, val_set = Subset(mnist_train_set, range(600)), Subset(mnist_train_set, range(59000, 59300))
    config = TrainConfig(
        model="efficient-capsnet",
        epochs=2,
        batch_size=32,
        lr=2e-3,
        out_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
        threads=1,
        seed=0,
        max_shift=0,
    )
    result = fit(None, train_set, val_set, config)
    assert result["best_val_accuracy"] > 0.5, result["history"]  # chance is 0.1
    model = capslib.load_checkpoint(tmp_path / "best.pt")
    assert type(model) is capslib.EfficientCapsNet and model.routing == "self_attention"


def test_a_baseline_refuses_a_routing_and_efficient_capsnet_refuses_multimnist(tmp_path):
    from capslib.training.prepare import build_model

    with pytest.raises(ValueError, match="--routing dynamic routes capsules; --model cnn-small has none"):
        build_model(None, TrainConfig(model="cnn-small", routing="dynamic"), None)
    with pytest.raises(ValueError, match="efficient-capsnet takes 28x28 images"):
        build_model(None, TrainConfig(model="efficient-capsnet", dataset="multimnist"), None)
    model = build_model(None, TrainConfig(model="efficient-capsnet", routing="uniform"), None)
    assert model.routing == "uniform" and model.routing_iterations == 1
    model = build_model(None, TrainConfig(model="capsnet", routing="em", routing_iterations=2), None)
    assert model.routing == "em" and model.routing_iterations == 2


def test_the_weight_average_copies_batchnorm_statistics_instead_of_averaging_them(mnist_train_set, tmp_path):
    """With ema_decay the validated model is an average of the weights; its BatchNorm running
    statistics must be the live model's, not an average biased towards their initial variance of 1."""
    train_set, val_set = Subset(mnist_train_set, range(128)), Subset(mnist_train_set, range(59000, 59064))
    config = TrainConfig(
        model="efficient-capsnet",
        epochs=1,
        batch_size=32,
        out_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
        threads=1,
        ema_decay=0.999,
        max_shift=0,
    )
    fit(None, train_set, val_set, config)
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=False)
    averaged, live = checkpoint["model"], checkpoint["train_model"]
    for name in live:
        if "running_" in name:
            torch.testing.assert_close(averaged[name], live[name], msg=name)
    assert not torch.equal(averaged["digit_caps.weight"], live["digit_caps.weight"])  # the weights are averaged


def test_a_model_card_describes_the_network_and_its_routing():
    from capslib.evaluation.cards import describe

    assert describe(capslib.EfficientCapsNet()) == (
        "Efficient-CapsNet (Mazzia et al. 2021), self_attention routing, with decoder, "
        "161,824 parameters without the decoder, trained on MNIST"
    )
    assert "em routing, 3 iterations, without decoder" in describe(capslib.EfficientCapsNet("em", reconstruction=False))
    shipped = "CapsNet (Sabour et al. 2017), 3 routing iterations, with decoder, trained on MNIST"
    assert describe(capslib.CapsNet()) == shipped  # the shipped cards' wording is unchanged
    assert describe(capslib.CapsNet(routing="uniform")).startswith("CapsNet (Sabour et al. 2017) with uniform routing,")


@pytest.mark.skipif(
    not __import__("capslib.data.datasets", fromlist=["x"]).DEBIAN_FASHION_MNIST.exists(),
    reason="Fashion-MNIST not installed (Debian's dataset-fashion-mnist)",
)
def test_a_fashion_mnist_run_exports_with_a_card_that_names_its_data_and_augmentation(tmp_path, monkeypatch):
    """Trained on Fashion-MNIST with Efficient-CapsNet's augmentation: the card is scored on the
    Fashion-MNIST test images (never MNIST's), says so, and refuses to score the run on MNIST."""
    import json

    import capslib.evaluation.accuracy
    import capslib.evaluation.cards
    import capslib.evaluation.cli
    from capslib.data import load_dataset

    full_evaluate = capslib.evaluation.accuracy.evaluate  # the card's passes over 300 test images to save time
    seen = []

    def shortened(model, dataset=None, *args, limit=None, **kwargs):
        seen.append(dataset)
        return full_evaluate(model, dataset, *args, limit=min(limit or 300, 300), **kwargs)

    for module in (capslib.evaluation.cli, capslib.evaluation.cards):
        monkeypatch.setattr(module, "evaluate", shortened)
    fashion = load_dataset("fashion-mnist", train=True)
    config = TrainConfig(
        model="efficient-capsnet", dataset="fashion-mnist", augment="efficient", epochs=1, batch_size=50,
        out_dir=str(tmp_path / "run"), tensorboard=False, progress=False, threads=1, seed=0,
    )  # fmt: skip
    fit(None, Subset(fashion, range(200)), Subset(fashion, range(59000, 59100)), config)
    out = tmp_path / "pretrained"
    argv = [str(tmp_path / "run" / "best.pt"), "--device", "cpu", "--export", str(out), "--name", "fashion_test"]
    capslib.evaluation.cli.main([*argv, "--dataset", "fashion-mnist", "--figure", str(tmp_path / "confusion.png")])
    card = json.loads((out / "fashion_test.json").read_text())
    assert card["dataset"] == "Fashion-MNIST" and card["description"].endswith("trained on Fashion-MNIST")
    assert card["data"].startswith("Fashion-MNIST training images") and "rotation up to 30 degrees" in card["data"]
    published = {
        entry["source"].rsplit("/", 2)[-2]: entry["test_accuracy"] for entry in card["published_capsnet_results"]
    }
    assert published == {"naturomics": 0.906, "XifengGuo": 0.936}  # the public capsule numbers beside ours
    test_images = load_dataset("fashion-mnist", train=False)
    assert all(d is not None and len(d) == len(test_images) and d[0][1] == test_images[0][1] for d in seen)
    with pytest.raises(ValueError, match="trained on 'fashion-mnist', not 'mnist'"):
        capslib.evaluation.cards.export_mnist(tmp_path / "run", out, "wrong", torch.device("cpu"))
