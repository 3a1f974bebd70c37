"""How MultiMNIST training scales with torchrun processes on this machine, measured.

    python benchmarks/ddp_scaling.py [--processes 1 2] [--threads-total 2] [--batches 2 8] [--amp]

For each process count N it runs ``torchrun --standalone --nproc_per_node=N -m capslib.train
--dataset multimnist`` twice, stopping after the two batch counts of ``--batches``, and takes the
difference of the wall times over the difference of the batches: the seconds per training step
without start-up (imports, data, the process group). The global batch is the same for every N
(each process trains its 1/N share), so the same number of steps is the same training. On CPUs
the cores are split evenly: each of N processes gets ``threads_total / N`` threads. On GPUs
(``--device cuda``) each process takes its own GPU.

It prints one line per N: seconds per step, pairs per second, and the speed-up over one process.
Start-up is excluded; evaluation is not involved (the runs stop mid-epoch).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_run(processes: int, threads: int, batches: int, args: argparse.Namespace, out: Path) -> float:
    """Wall seconds of one torchrun training run stopped after ``batches`` steps."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "capslib.train",
        "--dataset",
        "multimnist",
        "--batch-size",
        str(args.batch_size),
        "--stop-after-batches",
        str(batches),
        "--threads",
        str(threads),
        "--device",
        args.device,
        "--out",
        str(out),
        "--no-tensorboard",
        "--no-progress",
        "--checkpoint-minutes",
        "600",
        "--amp" if args.amp else "--no-amp",
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads-total", type=int, default=2, help="CPU threads shared out among the processes")
    parser.add_argument("--batches", nargs=2, type=int, default=[2, 8], help="the two stopping points")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch (every N)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (as the shipped MultiMNIST run)")
    args = parser.parse_args(argv)
    few, many = sorted(args.batches)
    if few == many or few < 1:
        raise ValueError(f"--batches must be two different counts >= 1, got {args.batches}")
    rows = []
    for processes in args.processes:
        if args.batch_size % processes:
            raise ValueError(f"the batch {args.batch_size} does not split evenly over {processes} processes")
        threads = max(1, args.threads_total // processes)
        with tempfile.TemporaryDirectory() as tmp:
            short = timed_run(processes, threads, few, args, Path(tmp) / "short")
            long = timed_run(processes, threads, many, args, Path(tmp) / "long")
        per_step = (long - short) / (many - few)
        rows.append({"processes": processes, "threads_each": threads, "seconds_per_step": per_step})
        speed_up = rows[0]["seconds_per_step"] / per_step
        print(
            f"{processes} process(es) x {threads} thread(s): {per_step:.2f} s/step, "
            f"{args.batch_size / per_step:.1f} pairs/s, speed-up {speed_up:.2f}x over {args.processes[0]} process(es) "
            f"(batch {args.batch_size}, steps {few}->{many}, {args.device}{', bf16' if args.amp else ''})",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
