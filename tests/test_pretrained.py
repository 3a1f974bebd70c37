"""The shipped model: it loads, and it measures what its card says, on the real test set."""

from __future__ import annotations

import os
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import capslib
from capslib.baselines import BaselineCNN
from capslib.data import load_dataset
from capslib.data.datasets import DEBIAN_FASHION_MNIST
from capslib.evaluation.accuracy import TEST_SLICE, evaluate
from capslib.pretrained import model_card, pretrained_dir
from capslib.training.checkpoints import initial_weights, load_last
from capslib.utils import data_dir

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


@pytest.mark.parametrize("name", sorted(p.stem for p in pretrained_dir().glob("*.json")))
def test_every_shipped_model_loads_from_its_card(name):
    """Every card's model_config names the model's arguments as the code does today (no renaming on load)."""
    model = capslib.load_pretrained("cpu", name=name)
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_a_checkpoint_naming_arguments_the_model_lacks_is_refused_naming_them(tmp_path):
    """The arguments' old names (primary_types, class_dim) are unknown now, like any other misspelling."""
    torch.manual_seed(0)
    model = capslib.CapsNet(conv_channels=16, num_types=4, in_dim=6, out_dim=7)
    config = dict(model.config)
    config["primary_types"] = config.pop("num_types")
    config["class_dim"] = config.pop("out_dim")
    torch.save({"model": model.state_dict(), "model_config": config}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"model_config has \['class_dim', 'primary_types'\], which CapsNet does not"):
        capslib.load_checkpoint(tmp_path / "old.pt", device="cpu")


# --- checkpoint files that are not what capslib expects ---------------------------------------------


class Unwanted:
    """Pickled into a "checkpoint": loading it would import and build this class (run code)."""


def write_bad_file(path: Path, kind: str) -> Path:
    """A file at ``path`` that capslib must refuse: cut short, noise, or pickled objects."""
    if kind == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:700])
    elif kind == "random bytes":
        path.write_bytes(random.Random(0).randbytes(5000))
    elif kind == "pickled object":
        torch.save(Unwanted(), path)
    else:  # a pickle that would call a function when loaded
        path.write_bytes(pickle.dumps(os.system))
    return path


BAD_FILES = ["truncated", "random bytes", "pickled object", "pickled function"]


def _pretrained_copy(folder: Path) -> Path:
    """Where load_pretrained looks for the weights once CAPSNET_DATA is ``folder`` (the card copied there)."""
    (folder / "pretrained").mkdir()
    (folder / "pretrained" / "capsnet_mnist.json").write_text((pretrained_dir() / "capsnet_mnist.json").read_text())
    return folder / "pretrained" / "capsnet_mnist.pt"


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize(
    "loader", ["load_checkpoint", "load_pretrained", "load_last", "load_last_mapped", "initial_weights"]
)
def test_a_bad_checkpoint_file_gives_a_value_error_naming_it(tmp_path, monkeypatch, loader, kind):
    """Truncated, noise or pickled code: a ValueError that names the file and what was expected,
    not PyTorch's unpickling message (pickled objects are never loaded: that could run code)."""
    if loader == "load_pretrained":
        path = write_bad_file(_pretrained_copy(tmp_path), kind)
        monkeypatch.setenv("CAPSNET_DATA", str(tmp_path))
        load = lambda: capslib.load_pretrained(device="cpu")  # noqa: E731
    elif loader.startswith("load_last"):  # mapped: what --status reads
        path = write_bad_file(tmp_path / "last.pt", kind)
        load = lambda: load_last(tmp_path, mmap=loader == "load_last_mapped")  # noqa: E731
    else:
        path = write_bad_file(tmp_path / "best.pt", kind)
        load = {
            "load_checkpoint": lambda: capslib.load_checkpoint(path, device="cpu"),
            "initial_weights": lambda: initial_weights(str(path)),
        }[loader]
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not .*expected .*") as error:
        load()
    message = str(error.value)
    assert len(message) < 400 and "Weights only load failed" not in message, message
    if kind == "pickled object":
        assert "Unwanted" in message and "code" in message, message


def test_a_checkpoint_of_the_wrong_content_is_refused_naming_it(tmp_path):
    """Readable, but not what the loader needs: a state dict where a training checkpoint belongs."""
    torch.save({"w": torch.zeros(3)}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'last.pt'))} .*training checkpoint.*'optimizer'"):
        load_last(tmp_path)
    torch.save([torch.zeros(3)], tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"weights\.pt .*state dict"):
        initial_weights(str(tmp_path / "weights.pt"))


# --- what evaluate refuses, and where its CLI writes ------------------------------------------------


class _MustNotRun(torch.nn.Module):
    """A model whose forward fails the test: the data must be refused before any inference."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        raise AssertionError("evaluate ran the model on data it should have refused")


@pytest.mark.parametrize(
    "images, expected",
    [
        (torch.full((4, 1, 28, 28), 255.0), r"got values from 255 to 255: .*divide by 255"),
        (torch.full((4, 1, 28, 28), -0.4242), r"standard-normalised MNIST"),
        (torch.full((4, 1, 28, 28), float("nan")), r"must be finite, got 3136 non-finite values"),
    ],
    ids=["0-255", "standardised", "nan"],
)
def test_evaluate_refuses_images_outside_zero_one_once_on_the_cpu(images, expected):
    dataset = TensorDataset(images, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=expected):
        evaluate(_MustNotRun(), dataset, progress=False)


def test_evaluate_refuses_labels_out_of_range_and_empty_data():
    dataset = TensorDataset(torch.zeros(2, 1, 28, 28), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got values from 0 to 10"):
        evaluate(_MustNotRun(), dataset, progress=False)
    empty = TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no images"):
        evaluate(_MustNotRun(), empty, progress=False)


def _fake_evaluation(*args, **kwargs):
    from capslib.evaluation.accuracy import Evaluation

    confusion = torch.eye(10, dtype=torch.long) * 5
    labels = torch.arange(10).repeat_interleave(5)
    return Evaluation(
        accuracy=1.0,
        errors=0,
        total=50,
        per_class_accuracy=torch.ones(10),
        confusion=confusion,
        predictions=labels,
        labels=labels,
        lengths=torch.nn.functional.one_hot(labels, 10).float(),
    )


def _fake_multi_evaluation(*args, **kwargs):
    from capslib.evaluation.accuracy import MultiEvaluation

    labels = torch.tensor([[0, 1], [2, 3]])
    return MultiEvaluation(both_right=1.0, at_least_one_right=1.0, total=2, lengths=torch.rand(2, 10), labels=labels)


@pytest.fixture
def fast_cli(monkeypatch, tmp_path):
    """The CLI with stand-ins for the 10,000-image evaluations, run from an empty working directory."""
    import capslib.evaluate
    import capslib.pretrained

    command = sys.modules[capslib.evaluate.main.__module__]  # where the command's code lives
    monkeypatch.setattr(command, "evaluate", _fake_evaluation)
    monkeypatch.setattr(command, "evaluate_multimnist", _fake_multi_evaluation, raising=False)
    shipped = lambda device=None, name=None: torch.nn.Linear(1, 1)  # noqa: E731
    monkeypatch.setattr(capslib.pretrained, "load_pretrained", shipped)
    monkeypatch.setattr(command, "load_pretrained", shipped, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return capslib.evaluate.main, work


def test_evaluate_cli_pretrained_writes_into_runs_evaluate_not_the_working_directory(fast_cli):
    main, work = fast_cli
    main(["pretrained", "--device", "cpu"])
    assert not (work / "confusion_matrix.png").exists()
    written = [p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()]
    assert written == ["runs/evaluate/capsnet_mnist_confusion.png"]


def test_evaluate_cli_out_folder(fast_cli, tmp_path):
    main, work = fast_cli
    main(["pretrained", "--device", "cpu", "--out", str(tmp_path / "results")])
    assert (tmp_path / "results" / "capsnet_mnist_confusion.png").stat().st_size > 1000
    assert not any(work.iterdir())


def test_evaluate_cli_checkpoint_figure_beside_it_or_in_out(fast_cli, tmp_path):
    main, work = fast_cli
    torch.manual_seed(0)
    model = capslib.CapsNet(conv_channels=4, num_types=2, in_dim=4, out_dim=4, reconstruction=False)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": model.state_dict(), "model_config": model.config}, run / "best.pt")
    main([str(run), "--device", "cpu"])
    assert (run / "best_confusion.png").exists()
    main([str(run / "best.pt"), "--device", "cpu", "--out", str(tmp_path / "elsewhere")])
    assert (tmp_path / "elsewhere" / "best_confusion.png").exists()
    assert not any(work.iterdir())


@pytest.mark.parametrize("dataset", ["mnist", "multimnist"])
def test_evaluate_cli_refuses_to_export_the_shipped_model_before_any_work(fast_cli, tmp_path, capsys, dataset):
    """A card's training facts come from a training checkpoint: 'pretrained' has none. Refused at once,
    with one line saying so (it was an UnboundLocalError after the whole evaluation for multimnist)."""
    main, work = fast_cli
    with pytest.raises(SystemExit) as exited:
        main(["pretrained", "--device", "cpu", "--dataset", dataset, "--export", str(tmp_path / "export")])
    assert exited.value.code != 0
    assert "error: --export needs a training checkpoint (a run's best.pt), not 'pretrained'" in capsys.readouterr().err
    assert not (tmp_path / "export").exists() and not any(work.iterdir())


def test_evaluate_cli_returns_what_it_measured_as_its_annotation_says(fast_cli):
    import typing

    from capslib.evaluation.accuracy import Evaluation, MultiEvaluation

    main, _ = fast_cli
    assert set(typing.get_args(typing.get_type_hints(main)["return"])) == {Evaluation, MultiEvaluation}
    assert isinstance(main(["pretrained", "--device", "cpu", "--dataset", "multimnist"]), MultiEvaluation)
    assert isinstance(main(["pretrained", "--device", "cpu"]), Evaluation)


FASHION = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST.exists() or (data_dir() / "fashion-mnist").exists()),
    reason="Fashion-MNIST not installed (Debian's dataset-fashion-mnist)",
)


@FASHION
@pytest.mark.parametrize("limit", [TEST_SLICE, pytest.param(None, marks=pytest.mark.slow)], ids=["slice", "all"])
def test_the_shipped_fashion_model_measures_what_its_card_says(limit):
    """capsnet_fashion_mnist: a capsule network (its card names the architecture and routing), at
    least 92.5% on the 10,000 Fashion-MNIST test images, set beside the public capsule numbers."""
    card = model_card("capsnet_fashion_mnist")
    assert card["dataset"] == "Fashion-MNIST" and card["test_images"] == 10_000
    assert card["test_accuracy"] >= 0.925, "the issue's bar for a shipped Fashion-MNIST model"
    assert "Efficient-CapsNet" in card["description"] and "routing" in card["description"]
    assert [entry["test_accuracy"] for entry in card["published_capsnet_results"]] == [0.906, 0.936]
    model = capslib.load_pretrained("cpu", name="capsnet_fashion_mnist")
    assert isinstance(model, capslib.EfficientCapsNet)
    result = evaluate(model, load_dataset("fashion-mnist", train=False), limit=limit, progress=False)
    expected = card["test_slice_errors"] if limit else card["test_errors"]
    assert abs(result.errors - expected) <= 1


@FASHION
@pytest.mark.parametrize("limit", [TEST_SLICE, pytest.param(None, marks=pytest.mark.slow)], ids=["slice", "all"])
def test_the_shipped_fashion_cnn_was_trained_as_the_capsule_network_was_and_measures_its_card(limit):
    """cnn_fashion_mnist: the CNN set beside capsnet_fashion_mnist, trained with the same recipe (only
    the model and where it was written differ), selected the same way, scored on the same images."""
    cnn, capsules = model_card("cnn_fashion_mnist"), model_card("capsnet_fashion_mnist")
    assert cnn["dataset"] == "Fashion-MNIST" and cnn["test_images"] == 10_000
    assert "cnn-small" in cnn["description"]
    recipe = {key: value for key, value in cnn["train_config"].items() if key not in ("model", "out_dir")}
    reference = {key: value for key, value in capsules["train_config"].items() if key not in ("model", "out_dir")}
    assert recipe == reference
    assert cnn["selected_by"] == capsules["selected_by"]
    model = capslib.load_pretrained("cpu", name="cnn_fashion_mnist")
    assert isinstance(model, BaselineCNN)
    result = evaluate(model, load_dataset("fashion-mnist", train=False), limit=limit, progress=False)
    expected = cnn["test_slice_errors"] if limit else cnn["test_errors"]
    assert abs(result.errors - expected) <= 1
