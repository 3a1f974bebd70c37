"""TensorBoard serves what the trainer logs: a short run, a real ``tensorboard`` server, its HTTP API.

A tiny CapsNet trains one epoch on 100 MNIST digits with ``tensorboard=True``; ``tensorboard``
(this environment's executable) is started on 127.0.0.1 and a free port, and its JSON API must list
every scalar tag the trainer wrote (and the image and histogram), with the values of the run's
history. The server is stopped by its own process in a finalizer. No browser needed.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from torch.utils.data import Subset

import capslib
from capslib.data import mnist
from capslib.training import fit

pytestmark = pytest.mark.browser  # opt-in, as every test of this folder (a real server, about 10 s)

# Scalars capslib.training.loop writes: per logged batch (every 50th) and per epoch (see train._log_epoch).
BATCH_TAGS = {"loss/total", "loss/margin", "loss/reconstruction"}
EPOCH_TAGS = {  # tag: the key of the epoch's history record holding the same value
    "accuracy/train": "train_accuracy",
    "accuracy/val": "val_accuracy",
    "lr": "lr",
    "loss/epoch_total": "train_loss",
}
START_TIMEOUT = 120  # seconds for tensorboard to start and load the run on a busy machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """``(out_dir, history)`` of a one-epoch run of a tiny CapsNet with TensorBoard logs in out_dir/tb."""
    out = tmp_path_factory.mktemp("tb_run")
    train = mnist(train=True)
    model = capslib.CapsNet(conv_channels=16, num_types=4, out_dim=8)  # seconds on a CPU
    result = fit(
        model,
        Subset(train, range(100)),
        Subset(train, range(59000, 59050)),
        epochs=1,
        batch_size=20,
        out_dir=str(out),
        tensorboard=True,
        progress=False,
        threads=1,
        device="cpu",
    )
    return out, result["history"]


@pytest.fixture(scope="module")
def tensorboard(trained_run, tmp_path_factory):
    """A ``tensorboard`` server over the run's logs: its base URL (stopped by its own process)."""
    executable = Path(sys.executable).with_name("tensorboard")
    if not executable.exists():
        pytest.fail(f"no tensorboard executable beside {sys.executable}: pip install -e '.[dev]'")
    log = tmp_path_factory.mktemp("tb_server") / "tensorboard.log"
    port = free_port()
    command = [
        str(executable),
        f"--logdir={trained_run[0] / 'tb'}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--load_fast=false",  # the Python loader: no tensorboard-data-server child process to outlive us
        "--reload_interval=1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def scalars(base: str, run: str, tag: str) -> list[tuple[float, int, float]]:
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return [tuple(row) for row in get_json(f"{base}/data/plugin/scalars/scalars?{query}")]


@pytest.mark.timeout(300)
def test_tensorboard_serves_the_trainers_scalars(trained_run, tensorboard):
    base, proc, log = tensorboard
    expected = BATCH_TAGS | set(EPOCH_TAGS)
    deadline, tags, last_error = time.monotonic() + START_TIMEOUT, {}, ""
    while time.monotonic() < deadline:  # until the server answers and has loaded every tag
        assert proc.poll() is None, f"tensorboard exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        try:
            tags = get_json(f"{base}/data/plugin/scalars/tags")
            if any(expected <= set(run_tags) for run_tags in tags.values()):
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last_error = repr(error)
        time.sleep(1)
    else:
        pytest.fail(f"tensorboard did not serve {sorted(expected)} in {START_TIMEOUT} s: {tags} {last_error}")

    assert list(tags) == ["."], f"one run, at the top of the log folder: {list(tags)}"
    served = set(tags["."])
    assert served == expected, f"scalar tags: missing {expected - served}, unexpected {served - expected}"

    for tag in BATCH_TAGS:  # batch 0 of epoch 1 is logged (every 50th batch)
        rows = scalars(base, ".", tag)
        assert rows and rows[0][1] == 0, f"{tag}: {rows}"
        assert all(math.isfinite(value) for _, _, value in rows), f"{tag}: {rows}"
    margin, total = scalars(base, ".", "loss/margin")[0][2], scalars(base, ".", "loss/total")[0][2]
    assert 0 < margin <= total, f"total loss = margin + weight x reconstruction: {margin} vs {total}"

    (record,) = trained_run[1]  # the one epoch's history
    for tag, key in EPOCH_TAGS.items():  # per epoch, at step = epoch number, the history's value
        rows = scalars(base, ".", tag)
        assert [step for _, step, _ in rows] == [1], f"{tag}: {rows}"
        assert rows[0][2] == pytest.approx(record[key], rel=1e-6), f"{tag}: {rows[0][2]} vs history {record[key]}"

    images = get_json(f"{base}/data/plugin/images/tags")["."]
    histograms = get_json(f"{base}/data/plugin/histograms/tags")["."]
    assert "inputs_vs_reconstructions" in images, images
    assert "coupling_coefficients" in histograms, histograms
