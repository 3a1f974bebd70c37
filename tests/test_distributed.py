"""torchrun + DistributedDataParallel on the CPU (gloo, 2 processes): the same run as one process,
rank 0 alone writes, a stopped run resumes, and bad worlds are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import capslib
from capslib.training import TrainConfig
from capslib.training.cli import main
from capslib.training.distributed import World, share, world_from_env
from capslib.training.prepare import check_world

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
RUN = [
    "--train-limit",
    "64",
    "--val-size",
    "100",
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--seed",
    "3",
    "--no-tensorboard",
    "--no-progress",
    "--threads",
    "1",
    "--checkpoint-minutes",
    "60",
]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run(
        [*TORCHRUN, "-m", "capslib.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(*RUN, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_two_processes_train_the_same_model_as_one(distributed_run, tmp_path):
    out, done = distributed_run
    assert done.stdout.count("best validation accuracy") == 1  # rank 0 speaks for both
    assert done.stdout.count("epoch   2/2") == 1
    main([*RUN, "--out", str(tmp_path / "one")])  # the same settings in this single process
    two, one = weights(out / "last.pt"), weights(tmp_path / "one" / "last.pt")
    assert two.keys() == one.keys() and not any(key.startswith("module.") for key in two)
    for key in one:  # gradients averaged over two halves of each batch = the whole batch's, to rounding
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    history_two = torch.load(out / "last.pt", weights_only=True)["history"]
    history_one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["history"]
    assert [h["val_accuracy"] for h in history_two] == [h["val_accuracy"] for h in history_one]
    assert [round(h["train_loss"], 4) for h in history_two] == [round(h["train_loss"], 4) for h in history_one]
    assert isinstance(capslib.load_checkpoint(out / "best.pt"), capslib.CapsNet)  # the plain model's checkpoint


def test_a_stopped_distributed_run_resumes_exactly(distributed_run, tmp_path):
    out, _ = distributed_run
    stopped = torchrun(*RUN, "--out", str(tmp_path), "--stop-after-batches", "3")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["batch_index"] == 3
    resumed = torchrun(*RUN, "--out", str(tmp_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming") == 1
    straight, again = weights(out / "last.pt"), weights(tmp_path / "last.pt")
    for key in straight:
        torch.testing.assert_close(again[key], straight[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.slow
def test_a_killed_distributed_run_resumes_exactly(distributed_run, tmp_path):
    """SIGKILL to torchrun and both workers mid-run (no chance to save): --resume continues from the
    last checkpoint rank 0 wrote and ends with the uninterrupted run's weights."""
    out, _ = distributed_run
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    every_step = ["--checkpoint-minutes", "0.0001"]  # a checkpoint at every agreement of the processes
    run = subprocess.Popen(
        [*TORCHRUN, "-m", "capslib.train", *RUN, *every_step, "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches torchrun and both workers
    )
    deadline = time.monotonic() + 300
    position = None
    while run.poll() is None and time.monotonic() < deadline:
        if (tmp_path / "last.pt").exists():  # written atomically: never half a file
            checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
            position = (checkpoint["epoch"], checkpoint["batch_index"])
            if position >= (1, 0):  # 4 batches an epoch: the first checkpoint is the first epoch's end
                break
        time.sleep(0.05)
    assert run.poll() is None, f"the run ended (at {position}) before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    killed_at = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (killed_at["epoch"], killed_at["batch_index"]) < (2, 0)  # part-way: there is training left to do
    resumed = torchrun(*RUN, "--out", str(tmp_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight, again = weights(out / "last.pt"), weights(tmp_path / "last.pt")
    for key in straight:
        torch.testing.assert_close(again[key], straight[key], rtol=0, atol=1e-6, msg=key)


def test_a_world_that_does_not_divide_the_batch_is_refused():
    with pytest.raises(ValueError, match=r"batch_size 15 must be a multiple of the world size 2.*--batch-size 14"):
        check_world(TrainConfig(batch_size=15), World(rank=0, size=2))
    with pytest.raises(ValueError, match="--compile is not supported under torchrun"):
        check_world(TrainConfig(batch_size=16, compile=True), World(rank=1, size=2))
    check_world(TrainConfig(batch_size=15), World())  # one process: anything goes


def test_each_process_takes_its_own_share_and_the_environment_is_read(monkeypatch):
    assert [share(16, World(rank=r, size=4)) for r in range(4)] == [
        slice(0, 4),
        slice(4, 8),
        slice(8, 12),
        slice(12, 16),
    ]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_env() == World(rank=1, size=2, local_rank=1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="expected 0 <= RANK < WORLD_SIZE, got RANK=2, WORLD_SIZE=2"):
        world_from_env()


def test_micro_batches_all_reduce_the_gradients_once_per_step(tmp_path):
    """Under DistributedDataParallel only the last micro-batch's backward averages the gradients
    (no_sync on the others): as many all-reduces as without micro-batches, and the same step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from capslib.training import train_step

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        x, y = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
        reduces, weights = {}, {}
        for micro_batch in (None, 7):  # one slice, or five
            torch.manual_seed(0)
            model = capslib.CapsNet(conv_channels=16, num_types=4, in_dim=8, out_dim=8)
            ddp = DistributedDataParallel(model)
            calls = reduces.setdefault(micro_batch, [])

            def counting(state, bucket, calls=calls):
                calls.append(1)
                return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])

            ddp.register_comm_hook(None, counting)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            train_step(ddp, optimizer, x, y, micro_batch=micro_batch, loss=capslib.CapsNet.loss)
            weights[micro_batch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        dist.destroy_process_group()
    assert len(reduces[7]) == len(reduces[None]) >= 1
    for key, value in weights[None].items():
        torch.testing.assert_close(weights[7][key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_processes_agree_on_stopping_every_few_steps_not_every_step(monkeypatch):
    """A signal reaches one process; all agree on it (one all-reduce, a wait for the device) every
    AGREE_EVERY steps and when stop_after_batches is reached, and between those neither stop nor save."""
    import capslib.training.hooks as hooks

    agreements = []

    def agree(flags, world, device):  # as if another process had been signalled at its third step
        agreements.append(len(agreements))
        return [True, flags[1]] if len(agreements) == 1 else flags

    monkeypatch.setattr(hooks, "agree", agree)

    class NoSignal:
        received = None

    def steps(stop_after, count):
        stopping = hooks.StopAgreement(NoSignal(), stop_after, World(rank=1, size=2), torch.device("cpu"))
        decided = []
        for index in range(count):
            report = hooks.StepReport(0, index, 1000, {}, read=dict, save=True)  # a timed checkpoint is due
            stopping.after_step(report)
            decided.append((report.stop, report.save))
        return decided

    decided = steps(stop_after=None, count=hooks.AGREE_EVERY)
    assert len(agreements) == 1  # one agreement in AGREE_EVERY steps
    assert decided[:-1] == [(False, False)] * (hooks.AGREE_EVERY - 1) and decided[-1] == (True, True)
    agreements.clear()
    decided = steps(stop_after=3, count=3)  # stop_after_batches: the same step on every process
    assert decided == [(False, False), (False, False), (True, True)] and len(agreements) == 1
