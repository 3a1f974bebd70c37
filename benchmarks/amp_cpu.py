"""bf16 autocast (``--amp``) against fp32 for one CPU training step, as a ratio measured in one run.

    python benchmarks/amp_cpu.py [--threads 2] [--rounds 5]

For MNIST (28x28, batch 128) and MultiMNIST (36x36, batch 128, two labels and two reconstructions)
it times a full training step (forward, margin + reconstruction loss, backward, Adam), fp32 and
bf16 alternating round by round so that a busy machine slows both alike, and prints the median
seconds per step and the speed-up. A CPU without native bf16 (AVX512-BF16 or AMX) gains little or
loses: the script prints which flags it found.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import capslib
from capslib.training import train_step
from capslib.utils import hardware_name


def bf16_flags() -> list[str]:
    """The CPU's native bf16 flags, from /proc/cpuinfo (empty where that file is missing)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return []
    return sorted({flag for flag in ("avx512_bf16", "amx_bf16") if flag in text.split()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = bf16_flags() or "none"
    print(f"{hardware_name(torch.device('cpu'))}, torch {torch.__version__}, native bf16 flags: {flags}")
    batch = args.batch_size
    for name, size, labels in (
        ("MNIST 28x28", 28, torch.randint(0, 10, (batch,))),
        ("MultiMNIST 36x36", 36, torch.stack([torch.arange(batch) % 10, (torch.arange(batch) + 3) % 10], dim=1)),
    ):
        torch.manual_seed(0)
        images = torch.rand(batch, 1, size, size)
        targets = None if labels.dim() == 1 else torch.rand(batch, 2, 1, size, size)
        times = {False: [], True: []}
        models = {amp: capslib.CapsNet(image_shape=(1, size, size)) for amp in times}
        optimizers = {amp: torch.optim.Adam(models[amp].parameters(), lr=1e-3) for amp in times}
        for round_ in range(args.rounds + 1):  # round 0 warms up and is not counted
            for amp in times:
                start = time.perf_counter()
                train_step(models[amp], optimizers[amp], images, labels, amp=amp, targets=targets)
                if round_:
                    times[amp].append(time.perf_counter() - start)
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        print(
            f"{name}: fp32 {fp32:.2f} s/step, bf16 autocast {bf16:.2f} s/step, speed-up {fp32 / bf16:.2f}x "
            f"(batch {batch}, medians of {args.rounds})"
        )


if __name__ == "__main__":
    main()
