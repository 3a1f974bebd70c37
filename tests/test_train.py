"""Training loop: it learns, resumes exactly, checkpoints atomically, logs to TensorBoard; its CLI."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed
from torch.utils.data import Subset, TensorDataset

import capslib
import capslib.training.batches as batches
import capslib.training.hooks as hooks
import capslib.training.prepare as prepare
import capslib.training.step as step_module
from capslib.functional import margin_loss
from capslib.training import TrainConfig, fit
from capslib.training.checkpoints import save_atomic
from capslib.training.cli import build_parser, config_from_args
from capslib.training.faults import TrainingInterrupted
from capslib.utils import eval_mode, hardware_name

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mnist_train(mnist_train_set):
    return mnist_train_set


def tiny_model() -> capslib.CapsNet:
    """A narrow CapsNet (same structure, few channels) so CPU tests take seconds."""
    return capslib.CapsNet(conv_channels=16, num_types=4, in_dim=8, out_dim=8)


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    settings = dict(
        epochs=2,
        batch_size=20,
        lr=1e-3,
        out_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
        threads=1,
        seed=7,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def tiny_data(mnist_train):
    return Subset(mnist_train, range(120)), Subset(mnist_train, range(59000, 59040))


def count_steps(monkeypatch) -> list:
    """Make fit's training steps append their batch size to the returned list."""
    steps, step = [], step_module.train_step

    def counting_step(model, optimizer, images, labels, *args, **kwargs):
        steps.append(len(labels))
        return step(model, optimizer, images, labels, *args, **kwargs)

    monkeypatch.setattr(step_module, "train_step", counting_step)
    return steps


@pytest.mark.slow  # the full-size CapsNet for 2 epochs of 1,000 real digits: about a minute on 2 cores
def test_training_smoke_on_real_digits(mnist_train, tmp_path, monkeypatch):
    """The default CapsNet on 1,000 real digits: every batch runs, loss falls, held-out accuracy far above chance."""
    train_set, val_set = Subset(mnist_train, range(1000)), Subset(mnist_train, range(59000, 59500))
    steps = count_steps(monkeypatch)
    result = fit(None, train_set, val_set, tiny_config(tmp_path, threads=None, max_shift=0))
    history = result["history"]
    assert steps == [20] * 100  # 2 epochs of 1,000 images in batches of 20
    assert [h["epoch"] for h in history] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "config.json", "history.json", "last.pt"]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.5, history  # chance is 0.1


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ema_decay", [None, 0.8])
def test_resume_is_exact(tiny_data, tmp_path, ema_decay):
    """Interrupted twice (mid-epoch and across an epoch boundary) == one uninterrupted run."""
    train_set, val_set = tiny_data  # 120 images, batch 20: 6 batches an epoch
    torch.manual_seed(7)
    straight = fit(tiny_model(), train_set, val_set, tiny_config(tmp_path / "straight", ema_decay=ema_decay))

    out = tmp_path / "interrupted"
    torch.manual_seed(7)
    fit(tiny_model(), train_set, val_set, tiny_config(out, stop_after_batches=3, ema_decay=ema_decay))
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batch_index"]) == (0, 3)
    fit(None, train_set, val_set, tiny_config(out, stop_after_batches=5), resume=True)
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batch_index"]) == (1, 2)
    assert checkpoint["config"]["ema_decay"] == ema_decay  # restored from the checkpoint, not the call
    resumed = fit(None, train_set, val_set, tiny_config(out), resume=True)

    expected, actual = state(straight["model"]), state(resumed["model"])
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
    assert [h["val_accuracy"] for h in resumed["history"]] == [h["val_accuracy"] for h in straight["history"]]
    assert [round(h["train_loss"], 6) for h in resumed["history"]] == [
        round(h["train_loss"], 6) for h in straight["history"]
    ]
    # each epoch says where it ran: a resumed run may have changed machines between its epochs
    assert [h["hardware"] for h in resumed["history"]] == [hardware_name(torch.device("cpu"))] * 2


def test_same_seed_same_weights_on_cpu(tiny_data, tmp_path):
    train_set, val_set = tiny_data
    runs = []
    for name in ("one", "two"):
        torch.manual_seed(3)
        runs.append(state(fit(tiny_model(), train_set, val_set, tiny_config(tmp_path / name, epochs=1))["model"]))
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_checkpoint_contents_and_reload(tiny_data, tmp_path):
    train_set, val_set = tiny_data
    torch.manual_seed(0)
    result = fit(tiny_model(), train_set, val_set, tiny_config(tmp_path, epochs=1))
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "config", "history", "model_config", "best_val_accuracy"):
        assert key in last
    assert last["config"]["seed"] == 7 and last["config"]["threads"] == 1
    assert (tmp_path / "config.json").exists() and (tmp_path / "history.json").exists()
    model = capslib.load_checkpoint(tmp_path / "last.pt", device="cpu")
    assert not model.training
    for key, value in result["model"].state_dict().items():
        assert torch.equal(model.state_dict()[key], value.cpu()), key
    assert capslib.load_checkpoint(tmp_path, device="cpu") is not None  # a run folder means its best.pt


def test_ema_weights_validate_and_ship(tiny_data, tmp_path):
    """With ema_decay the averaged weights are validated, saved as "model" and returned."""
    train_set, val_set = tiny_data
    torch.manual_seed(0)
    model = tiny_model()
    start = state(model)
    result = fit(model, train_set, val_set, tiny_config(tmp_path, epochs=1, ema_decay=0.5, max_shift=0))
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["ema_n_averaged"] == 6  # one update per batch
    raw, averaged = last["train_model"], last["model"]
    key = "digit_caps.weight"
    assert not torch.equal(raw[key], averaged[key])  # the average lags the raw weights
    assert not torch.equal(averaged[key], start[key])
    for name, value in result["model"].state_dict().items():
        assert torch.equal(averaged[name], value), name
    shipped = capslib.load_checkpoint(tmp_path / "best.pt", device="cpu")
    images = torch.stack([image for image, _ in val_set])
    labels = torch.tensor([label for _, label in val_set])
    with torch.no_grad():
        accuracy = (shipped(images).lengths.argmax(dim=1) == labels).float().mean().item()
    assert accuracy == pytest.approx(result["history"][0]["val_accuracy"])


def test_compile_opt_in_falls_back_to_eager(tiny_data, tmp_path, monkeypatch):
    """--compile where torch.compile cannot work: one warning, then the same run as without it."""

    def broken_compile(model, **options):
        def run(*args, **kwargs):
            raise BackendCompilerFailed(lambda *args: None, RuntimeError("no working C++ compiler"), None)

        return run

    train_set, val_set = tiny_data
    torch.manual_seed(5)
    plain = fit(tiny_model(), train_set, val_set, tiny_config(tmp_path / "plain", epochs=1))
    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(5)
    with pytest.warns(RuntimeWarning, match="running the model eagerly"):
        compiled = fit(tiny_model(), train_set, val_set, tiny_config(tmp_path / "compiled", epochs=1, compile=True))
    assert compiled["history"][0]["train_loss"] == plain["history"][0]["train_loss"]
    assert torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["config"]["compile"] is True


def test_micro_batches_give_the_same_step(mnist_train):
    """Slices of 7 (the last one short) give the same losses, accuracy count and update."""
    from capslib.training import train_step

    x = torch.stack([mnist_train[i][0] for i in range(30)])
    y = torch.tensor([mnist_train[i][1] for i in range(30)])
    results = []
    for micro_batch in (None, 7):
        torch.manual_seed(1)
        model = tiny_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = train_step(model, optimizer, x, y, micro_batch=micro_batch)
        results.append((step, state(model)))
    (whole, whole_state), (sliced, sliced_state) = results
    for key in ("loss", "classification", "reconstruction"):
        torch.testing.assert_close(sliced[key], whole[key], rtol=1e-5, atol=1e-7)
    assert sliced["correct"].item() == whole["correct"].item()
    for key in whole_state:  # one Adam step: parameters move by about lr, so compare tightly
        torch.testing.assert_close(sliced_state[key], whole_state[key], rtol=1e-4, atol=1e-6, msg=key)


def test_amp_on_the_cpu_runs_convolutions_in_bf16_and_routing_in_fp32(mnist_train):
    """--amp on a CPU: the convolutions compute in bf16, squash, routing and the losses in fp32.

    The step is close to the fp32 step (bf16 keeps 8 bits of mantissa) and the weights stay fp32.
    """
    from capslib.training.step import AMP_DEVICES, train_step

    assert "cpu" in AMP_DEVICES
    x = torch.stack([mnist_train[i][0] for i in range(16)])
    y = torch.tensor([mnist_train[i][1] for i in range(16)])
    results = []
    for amp in (False, True):
        torch.manual_seed(1)
        model = tiny_model()
        seen = {}

        def record(name, seen=seen):
            def hook(module, args, out):
                seen[name] = (out[0] if isinstance(out, tuple) else out).dtype  # returns None: output unchanged

            return hook

        model.conv1.register_forward_hook(record("conv1"))
        model.digit_caps.register_forward_hook(record("routing"))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = train_step(model, optimizer, x, y, amp=amp)
        results.append((step, state(model), seen))
    (plain, plain_state, plain_seen), (mixed, mixed_state, mixed_seen) = results
    assert plain_seen == {"conv1": torch.float32, "routing": torch.float32}
    assert mixed_seen == {"conv1": torch.bfloat16, "routing": torch.float32}
    assert mixed["loss"].dtype == torch.float32 and torch.isfinite(mixed["loss"])
    torch.testing.assert_close(mixed["loss"], plain["loss"], rtol=2e-2, atol=1e-3)
    assert all(value.dtype == torch.float32 for value in mixed_state.values())
    assert any(not torch.equal(mixed_state[key], plain_state[key]) for key in plain_state)  # bf16 did run


def test_fit_with_micro_batches_learns(tiny_data, tmp_path, monkeypatch):
    """12 steps in slices of 6 take the margin loss on the 120 training digits well below its start."""
    train_set, val_set = tiny_data
    images = torch.stack([image for image, _ in train_set])  # (120, 1, 28, 28)
    labels = torch.tensor([label for _, label in train_set])  # (120,)
    torch.manual_seed(2)
    model = tiny_model()

    def loss() -> float:
        with eval_mode(model):
            return margin_loss(model(images).lengths, labels).item()

    # A fresh model's capsules are nearly silent: loss ~0.81 = 0.9^2 (the true class's term alone).
    # Only lengthening the true capsules more than the others takes it lower (0.56 with this seed).
    before = loss()
    steps = count_steps(monkeypatch)
    fit(model, train_set, val_set, tiny_config(tmp_path, micro_batch=6, max_shift=0))
    assert steps == [20] * 12
    assert loss() < 0.75 * before, (before, loss())


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        capslib.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a capslib training checkpoint"):
        capslib.load_checkpoint(tmp_path / "other.pt")


def test_save_atomic_never_leaves_half_a_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    save_atomic({"a": torch.ones(3)}, target)

    def broken_save(obj, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"a": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr_decay": 1.5},
        {"max_shift": -1},
        {"routing_iterations": 0},
        {"ema_decay": 1.0},
        {"micro_batch": 0},
    ],
)
def test_bad_settings_raise(overrides, tmp_path):
    with pytest.raises(ValueError):
        fit(tiny_model(), config=tiny_config(tmp_path, **overrides))


def test_unknown_setting_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown training setting 'epoch'"):
        fit(tiny_model(), config=tiny_config(tmp_path), epoch=3)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_fit_accepts_any_dataset(tmp_path, dtype):
    """A plain TensorDataset (not torchvision) trains too, with labels of any integer dtype."""
    images = torch.rand(40, 1, 28, 28)
    labels = torch.randint(0, 10, (40,)).to(dtype)
    data = TensorDataset(images, labels)
    result = fit(tiny_model(), data, data, tiny_config(tmp_path, epochs=1))
    assert len(result["history"]) == 1


def test_tensorboard_logs(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_set, val_set = tiny_data
    fit(tiny_model(), train_set, val_set, tiny_config(tmp_path, epochs=1, tensorboard=True))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/total", "loss/margin", "loss/reconstruction", "accuracy/train", "accuracy/val", "lr"):
        assert tag in tags["scalars"], tags["scalars"]
    assert "inputs_vs_reconstructions" in tags["images"]
    assert "coupling_coefficients" in tags["histograms"]


def test_the_command_lists_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "capslib.train", "--help"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in out, flag


def test_init_from_shipped_weights(tiny_data, tmp_path):
    """--init-from pretrained starts from the shipped model's weights (here: zero learning rate)."""
    train_set, val_set = tiny_data
    result = fit(None, train_set, val_set, tiny_config(tmp_path, epochs=1, lr=1e-12, init_from="pretrained"))
    shipped = capslib.load_pretrained(device="cpu").state_dict()
    for key, value in result["model"].state_dict().items():
        torch.testing.assert_close(value.cpu(), shipped[key], atol=1e-6, rtol=0, msg=key)
    with pytest.raises(FileNotFoundError, match="init_from"):
        fit(None, train_set, val_set, tiny_config(tmp_path / "x", init_from=str(tmp_path / "none.pt")))


def test_labels_are_range_checked_once_up_front_on_the_cpu(tiny_data, tmp_path, monkeypatch):
    """fit checks each whole label set once, on the CPU, before training: its steps need no check
    of their own (on a GPU each would read the labels back, a synchronisation)."""
    calls, check = [], batches.check_label_range

    def recording_check(labels, num_classes, name="labels"):
        calls.append((name, len(labels), labels.device.type))
        check(labels, num_classes, name)

    monkeypatch.setattr(batches, "check_label_range", recording_check)
    fit(tiny_model(), *tiny_data, tiny_config(tmp_path))  # 2 epochs of 6 steps
    assert calls == [("training set labels", 120, "cpu"), ("validation set labels", 40, "cpu")]


@pytest.mark.parametrize("bad_set", ["training", "validation"])
def test_a_bad_label_fails_before_any_step(tiny_data, tmp_path, monkeypatch, bad_set):
    steps = count_steps(monkeypatch)
    images = torch.rand(30, 1, 28, 28)
    labels = torch.zeros(30, dtype=torch.long)
    labels[25] = 10  # late in the data: without the up-front check it would fail mid-epoch
    bad = TensorDataset(images, labels)
    train_set, val_set = (bad, tiny_data[1]) if bad_set == "training" else (tiny_data[0], bad)
    with pytest.raises(ValueError, match=rf"{bad_set} set labels must lie in \[0, 10\), got values from 0 to 10"):
        fit(tiny_model(), train_set, val_set, tiny_config(tmp_path / "run"))
    assert steps == []
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("bad_set", ["training", "validation"])
def test_images_outside_zero_one_fail_before_any_step(tiny_data, tmp_path, monkeypatch, bad_set):
    """Pixels in 0-255 train without an error but lose accuracy: fit refuses them up front."""
    steps = count_steps(monkeypatch)
    bad = TensorDataset(torch.rand(30, 1, 28, 28) * 255, torch.zeros(30, dtype=torch.long))
    train_set, val_set = (bad, tiny_data[1]) if bad_set == "training" else (tiny_data[0], bad)
    with pytest.raises(ValueError, match=rf"{bad_set} set images .*divide by 255"):
        fit(tiny_model(), train_set, val_set, tiny_config(tmp_path / "run"))
    assert steps == []


def test_fit_never_changes_the_callers_config(tiny_data, tmp_path):
    """Overrides, the threads fit records and a resumed run's own settings all go into fit's copy."""
    config = tiny_config(tmp_path, threads=None, stop_after_batches=2)
    before = copy.deepcopy(config)
    fit(tiny_model(), *tiny_data, config, epochs=1)
    assert config == before
    fit(None, *tiny_data, config, resume=True, seed=99)  # resuming keeps the checkpoint's seed 7
    assert config == before
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["config"]
    assert (saved["epochs"], saved["seed"], saved["threads"]) == (2, 7, torch.get_num_threads())


# ----------------------------------------------------------------------------- faults


def poison_loss(monkeypatch, at_step: int, before: dict | None = None) -> None:
    """Make the loss of fit's training step ``at_step`` (0-based, over the whole call) NaN, as NaN
    pixels would; ``before`` receives the model's weights just before that step."""
    calls, loss_of = [], capslib.CapsNet.loss

    def poisoned(output, images, labels, *args, **kwargs):
        loss, margin, recon = loss_of(output, images, labels, *args, **kwargs)
        calls.append(len(labels))
        if len(calls) == at_step + 1:
            loss = loss * float("nan")
        return capslib.model.Loss(loss, margin, recon)

    monkeypatch.setattr(capslib.CapsNet, "loss", staticmethod(poisoned))


def all_finite(tensors: dict) -> bool:
    return all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


def test_a_non_finite_loss_stops_before_the_step_on_the_cpu(tiny_data, tmp_path, monkeypatch):
    """On the CPU the loss is checked before the optimizer step (reading it costs nothing there):
    the step is not taken, the weights and last.pt stay good, and the error says where."""
    torch.manual_seed(7)
    model = tiny_model()
    fit(model, *tiny_data, tiny_config(tmp_path, epochs=1))  # 6 batches an epoch
    before_last = (tmp_path / "last.pt").read_bytes()
    weights = state(model)
    poison_loss(monkeypatch, at_step=2)  # the third batch of epoch 2
    steps = count_steps(monkeypatch)
    with pytest.raises(FloatingPointError, match=r"non-finite loss .*epoch 2/2, batch 3 of 6 \(TensorBoard step 8\)"):
        fit(model, *tiny_data, tiny_config(tmp_path, epochs=2), resume=True)
    assert len(steps) == 3
    assert (tmp_path / "last.pt").read_bytes() == before_last  # the last good checkpoint, untouched
    after = state(model)
    assert all_finite(after)
    assert any(not torch.equal(after[k], weights[k]) for k in weights)  # batches 1 and 2 did train


@pytest.mark.parametrize("checkpoint_minutes", [1e-9, 10.0], ids=["checkpoint-every-batch", "epoch-end"])
def test_a_non_finite_loss_never_reaches_a_checkpoint_where_reads_cost_a_sync(
    tiny_data, tmp_path, monkeypatch, checkpoint_minutes
):
    """Where reading the loss back would stall the device (a GPU), the step runs and a device-side
    flag records the first non-finite loss; it is read where the sums already are (checkpoints,
    epoch ends, the progress bar), before anything is saved."""
    monkeypatch.setattr(step_module, "reads_are_free", lambda tensor: False)  # as on a GPU
    torch.manual_seed(7)
    poison_loss(monkeypatch, at_step=8)  # epoch 2, batch 3
    config = tiny_config(tmp_path, checkpoint_minutes=checkpoint_minutes)
    with pytest.raises(FloatingPointError, match=r"epoch 2/2, batch 3 of 6 \(TensorBoard step 8\)"):
        fit(tiny_model(), *tiny_data, config)
    last, best = (torch.load(tmp_path / name, weights_only=True) for name in ("last.pt", "best.pt"))
    assert (last["epoch"], last["batch_index"]) == ((1, 2) if checkpoint_minutes < 1 else (1, 0))
    assert all_finite(last["model"]) and all_finite(best["model"])


def test_ctrl_c_in_fit_checkpoints_reraises_and_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    """In a notebook: Jupyter's interrupt (SIGINT) finishes the batch, writes a mid-epoch checkpoint
    like the periodic ones and raises KeyboardInterrupt; resuming gives the uninterrupted run."""
    torch.manual_seed(7)
    straight = fit(tiny_model(), *tiny_data, tiny_config(tmp_path / "straight"))

    steps, step = [], step_module.train_step

    def interrupted_step(*args, **kwargs):
        steps.append(None)
        if len(steps) == 8:  # epoch 2, batch 2
            signal.raise_signal(signal.SIGINT)
        return step(*args, **kwargs)

    monkeypatch.setattr(step_module, "train_step", interrupted_step)
    handler = signal.getsignal(signal.SIGINT)
    out = tmp_path / "interrupted"
    torch.manual_seed(7)
    with pytest.raises(KeyboardInterrupt, match=r"SIGINT.*epoch 2/2, 2 of its 6 batches done") as stop:
        fit(tiny_model(), *tiny_data, tiny_config(out))
    assert isinstance(stop.value, TrainingInterrupted) and stop.value.exit_status == 130
    assert len(steps) == 8  # the step under way when the signal came was finished, no other
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batch_index"]) == (1, 2)
    assert signal.getsignal(signal.SIGINT) is handler  # fit put the handler back
    monkeypatch.undo()

    resumed = fit(None, *tiny_data, tiny_config(out), resume=True)
    expected, actual = state(straight["model"]), state(resumed["model"])
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
    assert [h["val_accuracy"] for h in resumed["history"]] == [h["val_accuracy"] for h in straight["history"]]


# A small run of `python -m capslib.train` for the signal tests: the tiny model, and each step
# announced on stdout (and slowed down by STEP_SECONDS) so the test knows when training is under way.
CHILD = """
import os, time
import capslib, capslib.training.prepare as prepare, capslib.training.step as step_module
from capslib.training.cli import main
tiny = dict(conv_channels=16, num_types=4, in_dim=8, out_dim=8)
prepare.CapsNet = lambda **kwargs: capslib.CapsNet(**{**tiny, **kwargs})
step, pause = step_module.train_step, float(os.environ.get("STEP_SECONDS", "0"))
def announced_step(*args, **kwargs):
    print("step", flush=True)
    time.sleep(pause)
    return step(*args, **kwargs)
step_module.train_step = announced_step
main()
"""
SMALL_RUN = "--epochs 2 --batch-size 20 --train-limit 200 --val-size 100 --seed 3 --threads 1 --device cpu"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_cli_saves_says_how_to_resume_and_exits(tmp_path, monkeypatch, signum):
    """SIGINT/SIGTERM during `python -m capslib.train`: a checkpoint, one line with the command that
    resumes, exit status 128 + the signal; (SIGINT) that command completes the run exactly."""
    out = tmp_path / "run"
    args = [*SMALL_RUN.split(), "--no-progress", "--no-tensorboard", "--out", str(out)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO,
        env={**os.environ, "STEP_SECONDS": "0.2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = [child.stdout.readline() for _ in range(3)]  # three steps under way
    assert started == ["step\n"] * 3, child.communicate(timeout=60)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    said = [line for line in stderr.splitlines() if "--resume" in line]
    assert len(said) == 1, stderr
    command = shlex.split(said[0].split("continue with: ", 1)[1])
    assert command[:3] == ["python", "-m", "capslib.train"] and command[-1] == "--resume"
    assert command[command.index("--out") + 1] == str(out) and "--epochs" in command
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 0 and 3 <= checkpoint["batch_index"] < 10, said  # mid-epoch, after batch 3
    if signum != signal.SIGINT:
        return

    done = subprocess.run(
        [sys.executable, "-c", CHILD, *command[3:]], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming {out / 'last.pt'}: epoch 1/2, {checkpoint['batch_index']} of its 10 batches done" in done.stdout

    tiny = dict(conv_channels=16, num_types=4, in_dim=8, out_dim=8)
    monkeypatch.setattr(prepare, "CapsNet", lambda **kwargs: capslib.CapsNet(**{**tiny, **kwargs}))
    straight_args = [*args[:-1], str(tmp_path / "straight")]
    straight = fit(config=config_from_args(build_parser().parse_args(straight_args)))
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert (resumed["epoch"], resumed["batch_index"]) == (2, 0)
    for key, value in straight["model"].state_dict().items():
        assert torch.equal(resumed["model"][key], value), key


def test_resume_says_where_it_continues(tiny_data, tmp_path, capsys):
    fit(tiny_model(), *tiny_data, tiny_config(tmp_path, stop_after_batches=4))
    capsys.readouterr()
    fit(None, *tiny_data, tiny_config(tmp_path, stop_after_batches=1), resume=True)
    assert f"resuming {tmp_path / 'last.pt'}: epoch 1/2, 4 of its 6 batches done" in capsys.readouterr().out


def test_resume_keeps_the_runs_loss_whatever_the_call_says(tiny_data, tmp_path, capsys):
    """A resumed run keeps every setting of its model and loss: a new --reconstruction-weight (or
    --routing-iterations) is named in a note and not applied, so the epoch's loss stays the run's."""
    torch.manual_seed(7)
    fit(tiny_model(), *tiny_data, tiny_config(tmp_path, epochs=1, stop_after_batches=3))
    capsys.readouterr()
    asked = tiny_config(tmp_path, epochs=1, reconstruction_weight=0.5, routing_iterations=1)
    resumed = fit(None, *tiny_data, asked, resume=True)
    note = capsys.readouterr().out
    assert "reconstruction_weight=0.0005 (not 0.5)" in note and "routing_iterations=3 (not 1)" in note
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["reconstruction_weight"] == 0.0005 and saved["routing_iterations"] == 3
    assert resumed["model"].routing_iterations == 3
    record = resumed["history"][0]  # all six batches at the run's weight, three of them after the resume
    expected = record["train_margin_loss"] + 0.0005 * record["train_reconstruction_loss"]
    assert record["train_loss"] == pytest.approx(expected, rel=1e-6)


def test_validation_goes_through_the_one_prediction_loop(tiny_data, tmp_path, monkeypatch):
    import capslib.evaluation.predict as predict

    calls, loop = [], predict.predict

    def recording(model, images, *args, **kwargs):
        calls.append(len(images))
        return loop(model, images, *args, **kwargs)

    monkeypatch.setattr(predict, "predict", recording)
    result = fit(tiny_model(), *tiny_data, tiny_config(tmp_path, eval_batch_size=15))
    assert calls == [40, 40]  # the 40 validation images, once per epoch
    assert result["history"][0]["val_errors"] == round(40 * (1 - result["history"][0]["val_accuracy"]))


def test_resume_without_a_checkpoint_names_the_path(tiny_data, tmp_path):
    """A typo in --out must not silently start a new run."""
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "typo" / "last.pt"))):
        fit(tiny_model(), *tiny_data, tiny_config(tmp_path / "typo"), resume=True)


def test_a_full_disk_keeps_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    torch.manual_seed(7)
    fit(tiny_model(), *tiny_data, tiny_config(tmp_path, epochs=1))
    before = {name: (tmp_path / name).read_bytes() for name in ("last.pt", "best.pt")}

    def full_disk(obj, path):
        Path(path).write_bytes(b"the part that fitted")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=f"no space left on {re.escape(str(tmp_path))}") as error:
        fit(None, *tiny_data, tiny_config(tmp_path, epochs=2), resume=True)
    assert error.value.errno == errno.ENOSPC
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "config.json", "history.json", "last.pt"]


@pytest.mark.parametrize("free_bytes, full", [(0, True), (50 * 2**30, False)])
def test_save_atomic_recognises_a_full_disk_behind_torchs_write_errors(tmp_path, monkeypatch, free_bytes, full):
    """torch.save reports a full disk as "basic_ios::clear: iostream error", without an errno: the
    free space decides; with space left the error is passed on as it came."""

    def failing(obj, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", failing)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40, free_bytes))
    expected = (OSError, f"no space left on {re.escape(str(tmp_path))}") if full else (RuntimeError, "iostream")
    with pytest.raises(expected[0], match=expected[1]):
        save_atomic({"a": torch.ones(3)}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_a_killed_write_are_removed_at_start(tiny_data, tmp_path):
    ours = [".best.pt.k2j4_x9a.tmp", ".last.pt.0abcdefg.tmp", ".history.json.zz11yy22.tmp"]
    theirs = [".notes.tmp", "best.pt.tmp", ".best.pt.backup", "mine.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"x")
    fit(tiny_model(), *tiny_data, tiny_config(tmp_path, stop_after_batches=1))
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & set(ours)
    assert set(theirs) <= left


def test_the_progress_bar_shows_loss_and_accuracy_without_waiting_for_20_batches(tiny_data, tmp_path, monkeypatch):
    """Shown about every PROGRESS_SECONDS (one read-back each, never one per step): with steps that
    take longer than that, every batch of a short run updates it (before: batches 0 and 5 only)."""
    shown = []

    class RecordingBar(hooks.tqdm):
        def set_postfix(self, *args, **kwargs):
            shown.append(kwargs)
            return super().set_postfix(*args, **kwargs)

    step = step_module.train_step

    def slow_step(*args, **kwargs):
        result = step(*args, **kwargs)
        time.sleep(0.06)
        return result

    monkeypatch.setattr(hooks, "tqdm", RecordingBar)
    monkeypatch.setattr(step_module, "train_step", slow_step)
    monkeypatch.setattr(hooks, "PROGRESS_SECONDS", 0.05)
    fit(tiny_model(), *tiny_data, tiny_config(tmp_path, epochs=1, progress=True))
    assert len(shown) == 6 and {"loss", "acc"} <= set(shown[0])


def test_best_pt_holds_what_shipping_needs_and_last_pt_what_resuming_needs(tiny_data, tmp_path):
    """Only last.pt resumes: best.pt leaves out the optimizer state (two thirds of a checkpoint)."""
    fit(tiny_model(), *tiny_data, tiny_config(tmp_path, epochs=1, ema_decay=0.5))
    last, best = (torch.load(tmp_path / name, weights_only=True) for name in ("last.pt", "best.pt"))
    assert {"optimizer", "scheduler", "train_model", "ema_n_averaged"} <= set(last)
    assert not {"optimizer", "scheduler", "train_model", "ema_n_averaged", "generator_state"} & set(best)
    for key in ("model", "model_config", "config", "history", "best_val_accuracy", "best_epoch", "elapsed_seconds"):
        assert key in best, key
    assert (tmp_path / "best.pt").stat().st_size < 0.5 * (tmp_path / "last.pt").stat().st_size
    capslib.load_checkpoint(tmp_path / "best.pt", device="cpu")


# ----------------------------------------------------------------------------- command line

LEFT_OUT_OF_CLI = {"extra"}  # a free-form dict, set from Python only


def test_every_setting_has_a_flag_with_help_and_its_default():
    actions = {action.dest: action for action in build_parser()._actions}
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in LEFT_OUT_OF_CLI:
            assert f.name not in actions
            continue
        assert f.name in actions, f"TrainConfig.{f.name} has no command-line flag"
        assert f.metadata["help"] and actions[f.name].help == f.metadata["help"].replace("%", "%%"), f.name
        assert actions[f.name].default == getattr(defaults, f.name), f.name
    assert config_from_args(build_parser().parse_args([])) == TrainConfig()


def test_help_shows_every_default_once():
    parser = build_parser()
    help_text = parser.format_help()
    shown = [action for action in parser._actions if action.default is not argparse.SUPPRESS]  # all but --help
    assert help_text.count("(default:") == len(shown), help_text
    for text in ("--epochs EPOCHS", "(default: 50)", "--batch-size BATCH_SIZE", "(default: 128)"):
        assert text in help_text, text


@pytest.mark.parametrize(
    "argv, expected, resume",
    [
        ([], {}, False),
        (["--out", "runs/x", "--resume"], {"out_dir": "runs/x"}, True),
        (  # scripts/train_pretrained.sh, sweep 1
            "--batch-size 100 --lr-decay 0.95 --epochs 60 --seed 1 --out r/a --no-progress --device auto --threads 4",
            dict(batch_size=100, lr_decay=0.95, epochs=60, seed=1, out_dir="r/a", progress=False, threads=4),
            False,
        ),
        (  # sweep 4: continue the shipped model with weight averaging
            "--init-from pretrained --epochs 20 --batch-size 128 --lr 2e-4 --lr-decay 0.90 --ema-decay 0.999",
            dict(init_from="pretrained", epochs=20, lr=2e-4, lr_decay=0.9, ema_decay=0.999),
            False,
        ),
        (
            "--no-decoder --no-tensorboard --amp --compile --micro-batch 16 --dataset fashion-mnist "
            "--train-limit 1000 --val-size 500 --max-shift 0 --routing-iterations 1 --reconstruction-weight 0.001 "
            "--checkpoint-minutes 5 --eval-batch-size 100 --stop-after-batches 7 --device cpu",
            dict(
                reconstruction=False,
                tensorboard=False,
                amp=True,
                compile=True,
                micro_batch=16,
                dataset="fashion-mnist",
                train_limit=1000,
                val_size=500,
                max_shift=0,
                routing_iterations=1,
                reconstruction_weight=0.001,
                checkpoint_minutes=5.0,
                eval_batch_size=100,
                stop_after_batches=7,
                device="cpu",
            ),
            False,
        ),
    ],
)
def test_cli_flags_keep_their_meaning(argv, expected, resume):
    args = build_parser().parse_args(argv.split() if isinstance(argv, str) else argv)
    assert config_from_args(args) == TrainConfig(**expected)
    assert args.resume is resume


def test_cli_refuses_an_unknown_dataset(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--dataset", "cifar10"])
    assert "invalid choice" in capsys.readouterr().err


def test_every_command_line_of_the_training_script_parses():
    """scripts/train_pretrained.sh's runs (its shell variables expanded) are valid options."""
    script = (REPO / "scripts" / "train_pretrained.sh").read_text()
    variables = dict(re.findall(r'^\s*(\w+)="([^"]*)"$', script, flags=re.MULTILINE))
    runs = re.findall(r'\[\w\]="([^"]*)"', script)
    assert len(runs) >= 10
    for run in runs:
        expanded = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], run)
        args = build_parser().parse_args([*expanded.split(), "--out", "r/x", "--no-progress", "--threads", "4"])
        assert config_from_args(args).seed == int(re.search(r"--seed (\d+)", expanded)[1]), run


def test_readme_says_what_a_fault_costs():
    text = (REPO / "README.md").read_text()
    section = text.split("## Reliability", 1)[1].split("\n## ", 1)[0]
    assert text.index("## Reliability") < text.index("## Data")
    for promise in ("--resume", "checkpoint_minutes", "Ctrl-C", "SIGTERM", "no space left", "[0, 1]"):
        assert promise in section, promise


def test_a_mid_epoch_checkpoint_of_an_earlier_version_resumes_its_sums():
    """Its partial_epoch named the classification loss "margin": the sums carry over all the same."""
    from capslib.training.checkpoints import EpochSums

    carried = {"loss": 3.0, "margin": 2.0, "reconstruction": 100.0, "correct": 5, "seen": 10}
    totals, bad_step = EpochSums(carried, torch.device("cpu")).read()
    assert totals == {"loss": 3.0, "classification": 2.0, "reconstruction": 100.0, "correct": 5, "seen": 10}
    assert bad_step is None and "margin" in carried  # the checkpoint's dict is left as it was


def test_a_run_stopped_in_its_first_epoch_says_how_many_batches_an_epoch_has(tiny_data, tmp_path):
    """last.pt records the epoch's batch count, so ``--status`` can place a run stopped before any
    epoch finished (before, it counted as 0 epochs done: no history to read the count from)."""
    from capslib.experiments.status import status_lines, study_status

    run_dir = tmp_path / "checkpoints" / "capsnet-r1_seed0"
    fit(tiny_model(), *tiny_data, tiny_config(run_dir, stop_after_batches=3))  # 120 images, batches of 20
    assert torch.load(run_dir / "last.pt", weights_only=True)["batches_per_epoch"] == 6
    (row,) = study_status(["capsnet-r1"], [0], tmp_path / "study", tmp_path / "checkpoints", epochs=2)
    assert (row["state"], row["epoch"], row["batches_done"], row["batches_per_epoch"]) == ("under way", 1, 3, 6)
    assert row["epochs_done"] == pytest.approx(0.5)
    assert status_lines([row], 2)[0] == "capsnet-r1 seed 0: under way, epoch 1 of 2, 3 of its 6 batches done"
