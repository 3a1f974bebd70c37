"""The long trainings of issues 23 and 24 on one lent GPU, in one call of a few minutes, packed for the trip back.

    OUT=/some/folder python3 scripts/lease_runs.py full --deadline 540 [--slots 15]
    OUT=/some/folder python3 scripts/lease_runs.py smoke --deadline 75

Every training is one of the repository's own commands (``python -m capslib.ablation``,
``capslib.routing_study``, ``capslib.train``, ``capslib.evaluate``), run in parallel on the GPU.
Budgets grow in stages: a run first trains to the first stage's epochs; then, while the deadline
allows the next stage (timed from the stages so far), the same command with more ``--epochs``
resumes its ``last.pt`` and trains on. The learning rate decays per epoch, so a run resumed from
epoch 5 to 10 is the run that ``--epochs 10`` makes. Each finished stage of ``capslib.ablation`` and
``capslib.routing_study`` writes its raw results under ``results/<study>/epochs_<E>/``; a stage the
deadline stops is lost, and the stages finished before it stand. At the deadline every process is
sent SIGTERM (they checkpoint), and the results, histories, logs and the small checkpoints worth
shipping are packed into ``$OUT`` (at most 8 files of 16 MiB come back).

What travels to the device is the working tree (at most 64 MiB): before the call, move the three
large shipped weights (``capsnet_mnist.pt``, ``capsnet_multimnist.pt``, ``cnn_baseline_mnist.pt``,
41 MB) out of ``data/pretrained/`` (no job here loads them) and copy Fashion-MNIST into
``data/fashion-mnist/`` (31 MB; list it in ``.git/info/exclude`` and name it in the call's
``carry``); move the weights back after. The call: ``export PYTHONPATH=$PWD PYTHONUNBUFFERED=1;
python3 scripts/lease_runs.py full --deadline 520 2>&1 | tee $OUT/driver.log`` with a 600 s limit.
Which MNIST candidate could ship as ``efficient_capsnet_mnist`` is fixed here, before any training:
the one whose ``best_complete.pt`` has the highest validation accuracy (ties: the first listed), if
its test accuracy reaches the issue's 99.70%; the others are never tested.

Then unpack ``results.tgz`` in the repository root: the studies' raw results land in ``results/``,
each run's history and log in ``runs/lease/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PY = [sys.executable, "-m"]
DEVICE = os.environ.get("LEASE_DEVICE", "cuda")  # cpu: a rehearsal here
GPU = ["--device", DEVICE, "--threads", "1"]
RUNS = Path("runs/lease")
LOGS = RUNS / "logs"


@dataclass
class Job:
    """One run: its commands per stage (``stages[E]`` trains to E epochs), tried in order of E."""

    name: str
    stages: dict[int, list[list[str]]]
    slot: str | None = None  # the semaphore it waits for, None: starts at once
    after_stage: callable | None = None  # called with the epochs of every finished stage
    done: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


PROCESSES: set[subprocess.Popen] = set()
STOPPING = threading.Event()
LOCK = threading.Lock()


def run_command(job: Job, cmd: list[str]) -> int:
    with LOCK:
        if STOPPING.is_set():
            return -1
        log = open(LOGS / f"{job.name}.log", "a")
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        PROCESSES.add(proc)
    rc = proc.wait()
    with LOCK:
        PROCESSES.discard(proc)
    log.close()
    return rc


def run_job(job: Job, deadline: float, slots: dict[str, threading.Semaphore]) -> None:
    semaphore = slots.get(job.slot) if job.slot else None
    if semaphore:
        semaphore.acquire()
    try:
        previous = 0
        started = time.monotonic()
        for epochs in sorted(job.stages):
            if job.done:  # time this stage from the ones before it, with a margin
                per_epoch = (time.monotonic() - started) / previous
                if time.monotonic() + 1.1 * per_epoch * (epochs - previous) > deadline:
                    print(f"{job.name}: stops at {previous} epochs (no time for {epochs})", flush=True)
                    return
            stage_start = time.monotonic()
            for cmd in job.stages[epochs]:
                rc = run_command(job, cmd)
                if rc != 0:
                    print(f"{job.name}: stage {epochs} failed (rc {rc}); see {LOGS / job.name}.log", flush=True)
                    return
            job.done.append(epochs)
            job.seconds.append(round(time.monotonic() - stage_start, 1))
            previous = epochs
            if job.after_stage:
                job.after_stage(epochs)
            print(f"{job.name}: {epochs} epochs done at {time.monotonic() - T0:.0f} s", flush=True)
    finally:
        if semaphore:
            semaphore.release()


def study_job(module: str, study: str, variant: str, seed: int, stages: list[int], extra: list[str], slot=None) -> Job:
    """A run of ``capslib.ablation`` or ``capslib.routing_study``; each stage's result in results/<study>/epochs_<E>."""
    name = f"{study}_{variant}_seed{seed}"
    commands = {
        e: [
            [*PY, module, "--variants", variant, "--seeds", str(seed), "--epochs", str(e)]
            + ["--out", f"results/{study}/epochs_{e}", "--checkpoints", str(RUNS / study), *extra, *GPU]
        ]
        for e in stages
    }
    return Job(name, commands, slot=slot)


def train_job(name: str, options: list[str], stages: list[int], evaluate: list[str] | None = None, slot=None) -> Job:
    """A run of ``capslib.train`` in runs/lease/<name>; after each stage its best.pt is kept as best_complete.pt."""
    out = RUNS / name
    commands = {}
    for i, e in enumerate(stages):
        cmd = [*PY, "capslib.train", *options, "--epochs", str(e), "--out", str(out), "--no-progress"]
        cmd += ["--no-tensorboard", *GPU] + (["--resume"] if i else [])
        commands[e] = [cmd]
    if evaluate is not None:
        commands[stages[-1]].append([*PY, "capslib.evaluate", str(out / "best.pt"), *evaluate, "--device", DEVICE])

    def keep(epochs: int) -> None:
        shutil.copy(out / "best.pt", out / "best_complete.pt")
        (out / "complete.json").write_text(json.dumps({"epochs": epochs}))

    return Job(name, commands, slot=slot, after_stage=keep)


def full_jobs() -> list[Job]:
    jobs = []
    # Issue 24: the paper's CapsNet with reconstruction, 1 against 3 routing iterations, 3 seeds.
    for seed in (0, 1, 2):
        for variant in ("capsnet-r1-recon", "capsnet-r3-recon"):
            jobs.append(study_job("capslib.ablation", "table1", variant, seed, [5, 10, 15, 20, 25, 30], []))
    # Issue 23, item 4: every routing in Efficient-CapsNet, 3 seeds (seed-major, so whole seeds finish first).
    for seed in (0, 1, 2):
        for variant in ("dynamic-r3", "dynamic-r1", "uniform", "self_attention", "em"):
            jobs.append(study_job("capslib.routing_study", "routing_study", variant, seed, [10, 20, 30], [], "study"))
    # Issue 23, item 2: Efficient-CapsNet on MNIST with its paper's augmentation and a longer schedule.
    efficient = ["--model", "efficient-capsnet", "--augment", "efficient", "--max-shift", "2", "--ema-decay", "0.999"]
    for name, recipe in (
        ("effmnist_b32_seed0", ["--batch-size", "32", "--lr", "1e-3", "--lr-decay", "0.95", "--seed", "0"]),
        ("effmnist_b32_seed1", ["--batch-size", "32", "--lr", "1e-3", "--lr-decay", "0.95", "--seed", "1"]),
        ("effmnist_b16_seed0", ["--batch-size", "16", "--lr", "5e-4", "--lr-decay", "0.96", "--seed", "0"]),
    ):
        jobs.append(train_job(name, efficient + recipe, [20, 40, 60, 80, 100, 120]))
    # Issue 23, item 3: the paper's 35.4M-parameter CNN on Fashion-MNIST with the recipe of the shipped
    # capsnet_fashion_mnist (cnn-small, trained so on the CPU, ships as cnn_fashion_mnist).
    fashion = ["--dataset", "fashion-mnist", "--augment", "shift", "--max-shift", "2", "--batch-size", "32"]
    fashion += ["--lr", "1e-3", "--lr-decay", "0.9", "--ema-decay", "0.999"]
    options = ["--model", "cnn-baseline", *fashion]
    jobs.append(train_job("fashion_cnn-baseline", options, [10, 20, 30], ["--dataset", "fashion-mnist"]))
    return jobs


def smoke_jobs() -> list[Job]:
    """Every kind of job above, tiny: does each run on this GPU, and how fast?"""
    limit = os.environ.get("SMOKE_LIMIT", "6400")
    tiny = ["--train-limit", limit, "--test-limit", "1000"]
    jobs = [
        study_job("capslib.ablation", "smoke_table1", "capsnet-r3-recon", 0, [1, 2], tiny),
        study_job("capslib.routing_study", "smoke_study", "em", 0, [1], tiny + ["--batch-size", "64"]),
        study_job("capslib.routing_study", "smoke_study", "dynamic-r3", 0, [1], tiny + ["--batch-size", "64"]),
    ]
    efficient = ["--model", "efficient-capsnet", "--augment", "efficient", "--ema-decay", "0.999", "--batch-size", "32"]
    jobs.append(train_job("smoke_eff", efficient + ["--train-limit", limit], [1, 2]))
    cnn = ["--model", "cnn-baseline", "--dataset", "fashion-mnist", "--batch-size", "32", "--train-limit", limit]
    jobs.append(train_job("smoke_cnn", cnn, [1], ["--dataset", "fashion-mnist"]))
    # Contention: 12 small runs at once, against the one alone above (smoke_study dynamic-r3).
    for k in range(12):
        crowd = tiny + ["--batch-size", "64"]
        jobs.append(study_job("capslib.routing_study", f"smoke_crowd{k}", "self_attention", k, [1], crowd))
    return jobs


def stop_all() -> None:
    STOPPING.set()
    with LOCK:
        live = list(PROCESSES)
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + 25
    for proc in live:
        try:
            proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def pack(out: Path, jobs: list[Job]) -> None:
    """results/ folders, histories, configs, logs and evaluations into results.tgz; small best checkpoints apart."""
    summary = {j.name: {"stages_done": j.done, "stage_seconds": j.seconds} for j in jobs}
    (LOGS / "stages.json").write_text(json.dumps(summary, indent=1))
    with tarfile.open(out / "results.tgz", "w:gz") as tar:
        for folder in Path("results").iterdir():
            if folder.is_dir() and any(folder.glob("epochs_*")):
                tar.add(str(folder))
        for path in sorted(RUNS.rglob("*")):
            if path.suffix in (".json", ".log", ".png") or path.name.endswith("confusion.png"):
                tar.add(str(path))
    # The checkpoints worth shipping (Efficient-CapsNet and the small CNN, 4-7 MB each), two to a file.
    keep = sorted(p for p in RUNS.glob("*/best_complete.pt") if "baseline" not in p.parent.name)
    for i in range(0, len(keep), 2):
        with tarfile.open(out / f"checkpoints{i // 2}.tar", "w") as tar:
            for path in keep[i : i + 2]:
                tar.add(str(path))
                tar.add(str(path.parent / "config.json"))


def main() -> None:
    global T0
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["full", "smoke"])
    parser.add_argument("--deadline", type=float, default=540, help="seconds from now to stop everything")
    parser.add_argument("--slots", type=int, default=15, help="routing-study runs at once")
    args = parser.parse_args()
    T0 = time.monotonic()
    deadline = T0 + args.deadline
    out = Path(os.environ.get("OUT", "lease_out"))
    out.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if DEVICE == "cuda":
        subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"])
    jobs = full_jobs() if args.mode == "full" else smoke_jobs()
    if os.environ.get("LEASE_ONLY"):  # a rehearsal of some jobs
        jobs = [j for j in jobs if re.search(os.environ["LEASE_ONLY"], j.name)]
    slots = {"study": threading.Semaphore(args.slots)}
    threads = [threading.Thread(target=run_job, args=(job, deadline, slots), daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(2)
    stop_all()
    for thread in threads:
        thread.join(timeout=5)
    print(f"stopped at {time.monotonic() - T0:.0f} s", flush=True)
    pack(out, jobs)
    for job in jobs:
        print(job.name, "stages done:", job.done, "seconds:", job.seconds)
    for history in sorted(RUNS.rglob("history.json")):
        records = json.loads(history.read_text())
        seconds = [round(r["epoch_seconds"], 1) for r in records]
        val = [round(100 * r["val_accuracy"], 2) for r in records]
        print(history.parent.name, "epoch s:", seconds[-4:], "val:", val[-4:], "best:", max(val, default=None))
    subprocess.run(["bash", "-c", f"grep -h -E 'Error|error|Traceback' {LOGS}/*.log | sort | uniq -c | head -20"])
    print(f"packed at {time.monotonic() - T0:.0f} s:", sorted(p.name for p in out.iterdir()), flush=True)


T0 = 0.0

if __name__ == "__main__":
    main()
