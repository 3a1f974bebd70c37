"""Which CPU allocator workarounds pay for themselves: one cause, measured once.

    python benchmarks/allocator.py              # 3 rounds, about 10 minutes on 2 CPU cores
    python benchmarks/allocator.py --rounds 1   # quicker, noisier

The cause: glibc's ``malloc`` serves every allocation above its mmap threshold (at most 32 MiB)
with fresh pages from the kernel and returns them on ``free``, so a tensor that size is
page-faulted in (and zeroed by the kernel) every time it is made. CapsNet at batch 100 makes
several: ``u_hat`` is 74 MB and the Conv1 features 41 MB.

Each variant runs in a fresh process (the allocator's state is per process) and reports images/s
and minor page faults per step, for a training step (``capslib.training.train_step``) and for
inference at batch 100 and 500. capslib's default keeps ONE workaround: the fused routing routes a
CPU batch in chunks whose ``u_hat`` stays under 16 MiB (``capslib.fused_routing.CPU_CHUNK_BYTES``).
The variants, each measured against ``no workaround`` (that chunking switched off):

* ``chunked routing (default)``: capslib as it runs;
* ``+ micro-batch 32``: also ``train_step(micro_batch=32)``, the forward/backward in slices of 32;
* ``+ channels-last conv1``: also Conv1 in the channels-last layout while training;
* ``glibc env``: no chunking, but ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` for the
  process: no allocation is ever handed back, so nothing is faulted in twice (the process keeps its
  peak memory);
* ``chunked routing + glibc env``: both.

Rounds run the variants in alternating order; the table shows medians over rounds. Timings on a
shared machine are noisy: the page-fault counts are the mechanism, the images/s the effect.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "no workaround": {"chunking": False},
    "chunked routing (default)": {},
    "+ micro-batch 32": {"micro_batch": 32},
    "+ channels-last conv1": {"channels_last": True},
    "glibc env": {"chunking": False, "env": True},
    "chunked routing + glibc env": {"env": True},
}
GLIBC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def _channels_last(conv):
    """``conv.forward`` computed in the channels-last layout while gradients are on (same numbers)."""
    import torch

    plain = conv.forward

    def run(x):
        if not torch.is_grad_enabled():
            return plain(x)
        return plain(x.contiguous(memory_format=torch.channels_last)).contiguous()

    return run


def measure(variant: dict, train_steps: int, infer_steps: int) -> dict:
    """``{"train 100" | "infer 100" | "infer 500": (seconds per step, minor faults per step)}``."""
    import torch

    import capslib
    import capslib.fused_routing
    from capslib.training import train_step

    if not variant.get("chunking", True):
        capslib.fused_routing.CPU_CHUNK_BYTES = 2**62  # the whole batch in one chunk
    torch.manual_seed(0)
    model = capslib.CapsNet()
    if variant.get("channels_last"):
        model.conv1.forward = _channels_last(model.conv1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    x100 = torch.rand(100, 1, 28, 28, generator=generator)
    y100 = torch.randint(0, 10, (100,), generator=generator)
    x500 = torch.rand(500, 1, 28, 28, generator=generator)

    def timed(step, calls: int) -> tuple[float, float]:
        step()  # warm-up: thread pool, first allocations
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(calls):
            step()
        seconds = (time.perf_counter() - start) / calls
        return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls

    model.train()
    micro_batch = variant.get("micro_batch")
    train = lambda: train_step(model, optimizer, x100, y100, micro_batch=micro_batch)  # noqa: E731
    results = {"train 100": timed(train, train_steps)}
    model.eval()
    with torch.no_grad():
        results["infer 100"] = timed(lambda: model(x100), infer_steps)
        results["infer 500"] = timed(lambda: model(x500), max(1, infer_steps // 3))
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--infer-steps", type=int, default=6)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.train_steps, args.infer_steps)))
        return {}

    import torch

    threads = torch.get_num_threads()
    print(f"# CPU allocator workarounds: torch {torch.__version__}, {threads} threads, {args.rounds} rounds")
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        order = list(VARIANTS.items())
        for name, variant in order if round_index % 2 == 0 else reversed(order):
            env = {**os.environ, **(GLIBC_ENV if variant.get("env") else {})}
            command = [sys.executable, __file__, "--child", json.dumps(variant)]
            command += ["--train-steps", str(args.train_steps), "--infer-steps", str(args.infer_steps)]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {round_index + 1}: {name} done", file=sys.stderr, flush=True)

    keys = ("train 100", "infer 100", "infer 500")
    print(f"\n{'variant':34s}" + "".join(f" {key + ' img/s':>16s} {'faults/step':>11s}" for key in keys))
    table = {}
    for name, results in runs.items():
        row = {}
        for key in keys:
            batch = int(key.split()[1])
            seconds = statistics.median(r[key][0] for r in results)
            faults = statistics.median(r[key][1] for r in results)
            row[key] = (batch / seconds, faults)
        table[name] = row
        print(f"{name:34s}" + "".join(f" {row[k][0]:16.1f} {row[k][1]:11.0f}" for k in keys))
    base = table["no workaround"]
    print("\nspeed-up over 'no workaround' (images/s ratio):")
    for name, row in table.items():
        print(f"{name:34s}" + "".join(f" {row[k][0] / base[k][0]:16.2f} {'':11s}" for k in keys))
    return table


if __name__ == "__main__":
    main()
