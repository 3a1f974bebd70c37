"""Performance of capslib's CapsNet against the plain vectorised version, in one run.

    python benchmarks/perf.py                 # full run, about 9 minutes on 2 CPU cores
    python benchmarks/perf.py --quick         # one repetition of everything (tests, smoke runs)
    python benchmarks/perf.py --device cuda   # the same on a GPU

Prints, in order: the machine's fp32 matrix-multiply rate (2048x2048, all threads); the model's
analytic FLOPs per image; training and inference images/s at batch 100 of capslib and of
``reference_impls.PlainCapsNet`` measured interleaved (A, B, B, A, A, B, ...; medians), their ratio and
their efficiency (achieved FLOP/s / matmul FLOP/s); a table over batch size and routing
iterations; peak memory of a training step (fresh subprocess per measurement); the part capslib
fuses (prediction vectors + routing, ``capslib.fused_routing``) against the plain einsums, with and without
backward; the routing step alone against the loop-by-loop transcription of Procedure 1
(``tests/reference.py``, the one the tests check against); and a torch.profiler table of one
capslib training step.

Training step = forward + margin/reconstruction loss + backward + Adam step, fp32; capslib's is
``capslib.training.train_step`` as ``fit`` runs it (the whole batch at once). Inference =
eval-mode forward under ``torch.no_grad`` (the decoder included, masked with the prediction).
Inputs are random images in [0, 1] and random labels: the cost does not depend on the data.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import capslib
from capslib.fused_routing import routed_capsules
from capslib.routing import resolve_routing_implementation
from capslib.training import train_step

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
from reference import routing_reference  # noqa: E402
from reference_impls import PlainCapsNet, plain_loss  # noqa: E402

IMPLS = ("capslib", "plain")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


# ----------------------------------------------------------------------------- machine and model


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """fp32 ``size x size`` matmul rate in GFLOP/s (2 size^3 FLOPs per product; median of ``repeats``)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)  # warm-up: thread pool, BLAS buffers
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def flops_per_image(model: capslib.CapsNet) -> dict[str, float]:
    """Analytic forward FLOPs of one image, by part: 2 FLOPs per multiply-add, nothing else counted.

    Convolutions: ``C_out * H_out * W_out * C_in * k * k`` multiply-adds; u_hat ``N_in N_out D_out
    D_in``; routing ``(2R - 1) N_in N_out D_out`` (R weighted sums, R - 1 agreements); decoder the
    three Linear layers. Softmax, squash, biases, losses and the optimizer are not counted.
    """
    channels, height, width = model.image_shape
    conv1 = model.conv1
    h1, w1 = height - conv1.kernel_size[0] + 1, width - conv1.kernel_size[1] + 1
    primary = model.primary_caps.inner
    grid_h, grid_w = model.primary_grid
    caps = model.digit_caps
    macs = {
        "conv1": conv1.out_channels * h1 * w1 * channels * conv1.kernel_size[0] * conv1.kernel_size[1],
        "primary conv": primary.out_channels * grid_h * grid_w * primary.in_channels * math.prod(primary.kernel_size),
        "u_hat": caps.in_capsules * caps.out_capsules * caps.out_dim * caps.in_dim,
        "routing": (2 * caps.routing_iterations - 1) * caps.in_capsules * caps.out_capsules * caps.out_dim,
        "decoder": sum(m.in_features * m.out_features for m in model.decoder.net if isinstance(m, torch.nn.Linear)),
    }
    return {name: 2.0 * n for name, n in macs.items()}


# ----------------------------------------------------------------------------- the two implementations


# capslib's routing_implementation in every section but the one that compares them.
ROUTING_IMPLEMENTATION = "auto"


def build(impl: str, device: torch.device, iterations: int = 3, seed: int = 0, routing: str | None = None):
    """``(model, step)`` of ``impl``: ``step(x, y)`` is one training step (forward, loss, backward,
    Adam), capslib's as ``capslib.training.fit`` runs it. Both impls get the same initial weights.
    ``routing`` is capslib's ``routing_implementation`` (default: ``ROUTING_IMPLEMENTATION``)."""
    torch.manual_seed(seed)
    reference = capslib.CapsNet(routing_iterations=iterations)
    if impl == "capslib":
        model = reference.to(device)
        model.routing_implementation = routing or ROUTING_IMPLEMENTATION
    elif impl == "plain":
        model = PlainCapsNet(routing_iterations=iterations)
        model.load_state_dict(reference.state_dict())
        model = model.to(device)
    else:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if impl == "capslib":

        def step(x, y):
            train_step(model, optimizer, x, y)

    else:

        def step(x, y):
            loss = plain_loss(model(x, y), x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return model, step


def make_steps(impl: str, device: torch.device, batch_size: int, iterations: int = 3, routing: str | None = None):
    """``(train_step, infer_step)`` closures of ``impl`` on a fixed random batch."""
    model, step = build(impl, device, iterations, routing=routing)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch_size, 1, 28, 28, generator=generator).to(device)  # (B, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,), generator=generator).to(device)  # (B,)

    def train_step():
        model.train()
        step(x, y)

    def infer_step():
        model.eval()
        with torch.no_grad():
            model(x)

    return train_step, infer_step


def time_step(step, device: torch.device, min_seconds: float = 0.0) -> float:
    """Seconds per call of ``step``: calls it until ``min_seconds`` have passed (at least once)."""
    _sync(device)
    start, calls = time.perf_counter(), 0
    while True:
        step()
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def interleaved(steps: dict, device: torch.device, repeats: int, min_seconds: float, warmup: int = 1) -> dict:
    """Median seconds per call of each entry of ``steps``, timed A, B, A, B, ... ``repeats`` times."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for repeat in range(repeats):
        order = list(steps.items()) if repeat % 2 == 0 else list(reversed(steps.items()))  # cancel order effects
        for name, step in order:
            times[name].append(time_step(step, device, min_seconds))
    return {name: statistics.median(t) for name, t in times.items()}


# ----------------------------------------------------------------------------- sections


def headline(device, batch_size, repeats, min_seconds, flops) -> None:
    """Batch-``batch_size`` images/s, ratio and efficiency; the matmul rate re-measured every repeat."""
    print(f"\n## Throughput at batch {batch_size}, R=3 (interleaved, median of {repeats})")
    train, infer = {}, {}
    for impl in IMPLS:
        train[impl], infer[impl] = make_steps(impl, device, batch_size)
    for step in (*train.values(), *infer.values()):
        step()  # warm-up
    seconds = {f"{mode} {impl}": [] for mode in ("train", "infer") for impl in IMPLS}
    rates = []
    for repeat in range(repeats):
        rates.append(matmul_gflops(device, repeats=3))
        for impl in IMPLS if repeat % 2 == 0 else reversed(IMPLS):  # A, B, then B, A: cancel order effects
            seconds[f"train {impl}"].append(time_step(train[impl], device, min_seconds))
            seconds[f"infer {impl}"].append(time_step(infer[impl], device, min_seconds))
    rate = statistics.median(rates) * 1e9
    print(
        f"matmul rate during these repeats: median {rate / 1e9:.1f} GFLOP/s "
        f"(min {min(rates):.1f}, max {max(rates):.1f})"
    )
    forward = sum(flops.values())
    print(f"{'':22s} {'capslib':>10s} {'plain':>10s} {'ratio':>7s} {'eff capslib':>12s} {'eff plain':>10s}")
    for mode, per_image in (("train", 3 * forward), ("infer", forward)):
        ips = {impl: batch_size / statistics.median(seconds[f"{mode} {impl}"]) for impl in IMPLS}
        eff = {impl: ips[impl] * per_image / rate for impl in IMPLS}
        label = "training images/s" if mode == "train" else "inference images/s"
        print(
            f"{label:22s} {ips['capslib']:10.1f} {ips['plain']:10.1f} {ips['capslib'] / ips['plain']:7.3f} "
            f"{eff['capslib']:12.3f} {eff['plain']:10.3f}"
        )
    for mode in ("train", "infer"):
        paired = [a / b for a, b in zip(seconds[f"{mode} plain"], seconds[f"{mode} capslib"], strict=True)]
        print(f"{mode} ratio capslib/plain, median of the {repeats} paired repeats: {statistics.median(paired):.3f}")


def fused_vs_reference(device, batch_sizes, repeats, min_seconds) -> None:
    """capslib's two routing implementations, interleaved: what ``"auto"`` should pick on this device."""
    print(f"\n## capslib routing paths: fused vs reference, R=3 (interleaved, median of {repeats})")
    print(
        f"{'B':>5s} {'train fused':>12s} {'train ref':>10s} {'ratio':>6s} "
        f"{'infer fused':>12s} {'infer ref':>10s} {'ratio':>6s}"
    )
    for batch_size in batch_sizes:
        steps = {}
        for name, routing in (("fused", "fused"), ("ref", "reference")):
            steps[f"train {name}"], steps[f"infer {name}"] = make_steps("capslib", device, batch_size, routing=routing)
        ips = {name: batch_size / s for name, s in interleaved(steps, device, repeats, min_seconds).items()}
        print(
            f"{batch_size:5d} {ips['train fused']:12.1f} {ips['train ref']:10.1f} "
            f"{ips['train fused'] / ips['train ref']:6.2f} {ips['infer fused']:12.1f} {ips['infer ref']:10.1f} "
            f"{ips['infer fused'] / ips['infer ref']:6.2f}"
        )


def sweep(device, batch_sizes, iterations_list, repeats, min_seconds) -> None:
    """Images/s over batch size x routing iterations, both impls interleaved in every cell."""
    print(f"\n## Images/s over batch size and routing iterations (interleaved, median of {repeats})")
    print(
        f"{'B':>5s} {'R':>3s} {'train capslib':>14s} {'train plain':>12s} {'ratio':>6s} "
        f"{'infer capslib':>14s} {'infer plain':>12s} {'ratio':>6s}"
    )
    train_ips = {}
    for iterations in iterations_list:
        for batch_size in batch_sizes:
            steps = {}
            for impl in IMPLS:
                steps[f"train {impl}"], steps[f"infer {impl}"] = make_steps(impl, device, batch_size, iterations)
            med = interleaved(steps, device, repeats, min_seconds)
            ips = {name: batch_size / s for name, s in med.items()}
            train_ips[batch_size, iterations] = ips["train capslib"]
            print(
                f"{batch_size:5d} {iterations:3d} {ips['train capslib']:14.1f} {ips['train plain']:12.1f} "
                f"{ips['train capslib'] / ips['train plain']:6.2f} {ips['infer capslib']:14.1f} "
                f"{ips['infer plain']:12.1f} {ips['infer capslib'] / ips['infer plain']:6.2f}"
            )
    lo, hi = min(iterations_list), max(iterations_list)
    for batch_size in batch_sizes:
        if lo != hi:
            cost = train_ips[batch_size, lo] / train_ips[batch_size, hi]
            print(f"capslib training step, B={batch_size}: R={hi} costs {cost:.2f}x R={lo}")
    small, large = min(batch_sizes), max(batch_sizes)
    mid = [b for b in batch_sizes if b != small]
    if mid and min(mid) != large:
        r = 3 if 3 in iterations_list else lo
        ratio = train_ips[large, r] / train_ips[min(mid), r]
        print(f"capslib training images/s, B={large} / B={min(mid)} (R={r}): {ratio:.2f}")


def _memory_child(impl: str, device: torch.device, batch_size: int) -> dict:
    """In a fresh process: RSS (CPU) or allocated memory (CUDA) growth of one training step.

    A batch-1 step first allocates the gradients and Adam's state and warms up the libraries, so
    the growth is what the batch-``batch_size`` step itself needs (activations, u_hat, ...).
    """
    model, train = build(impl, device)
    x = torch.rand(batch_size, 1, 28, 28, device=device)  # (B, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,), device=device)  # (B,)

    def step(n):
        train(x[:n], y[:n])

    step(1)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(batch_size)
        _sync(device)
        return {"before_mb": before / 2**20, "growth_mb": (torch.cuda.max_memory_allocated(device) - before) / 2**20}
    try:  # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_mb("VmRSS")
        step(batch_size)
        return {"before_mb": before, "growth_mb": _proc_status_mb("VmHWM") - before, "how": "VmHWM"}
    except OSError:  # elsewhere ru_maxrss, whose peak may date from before the step (imports)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        step(batch_size)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"before_mb": before, "growth_mb": peak - before, "how": "ru_maxrss"}


def _proc_status_mb(field: str) -> float:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def memory(device, batch_size, threads, routing: str = "auto") -> None:
    kind = "peak allocated (CUDA)" if device.type == "cuda" else "peak RSS"
    print(f"\n## Memory of one training step at batch {batch_size}: {kind} growth, fresh subprocess each")
    params = sum(p.numel() for p in capslib.CapsNet().parameters())
    print(
        f"u_hat alone: {batch_size * 1152 * 10 * 16 * 4 / 2**20:.1f} MiB; parameters {params / 1e6:.2f}M = "
        f"{params * 4 / 2**20:.1f} MiB (x4 with gradients and Adam's two moments)"
    )
    for impl in IMPLS:
        command = [sys.executable, __file__, "--memory-child", impl, "--device", str(device)]
        command += ["--batch-size", str(batch_size), "--threads", str(threads), "--routing-implementation", routing]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        how = f" ({result['how']})" if "how" in result else ""
        print(
            f"{impl:8s} before the step {result['before_mb']:8.1f} MiB, step growth {result['growth_mb']:8.1f} MiB{how}"
        )


def routing_alone(device, batch_size, repeats) -> None:
    """Forward of the routing step only (R=3, no grad): capslib vs plain einsum loop vs the loop reference."""
    print(f"\n## Routing step alone: B={batch_size}, u_hat (B, 1152, 10, 16), R=3, forward, no grad")
    u_hat = 0.05 * torch.randn(batch_size, 1152, 10, 16, generator=torch.Generator().manual_seed(2)).to(device)

    def plain_einsum_routing():
        logits = torch.zeros(u_hat.shape[:3], device=device)  # (B, N_in, N_out)
        for r in range(3):
            v = capslib.squash(torch.einsum("bij,bije->bje", torch.softmax(logits, dim=2), u_hat), dim=-1)
            if r < 2:
                logits = logits + torch.einsum("bije,bje->bij", u_hat, v)  # (B, N_in, N_out)

    steps = {
        "capslib.dynamic_routing": lambda: capslib.dynamic_routing(u_hat, iterations=3),
        "plain (einsum, loop over R)": plain_einsum_routing,
        "loop reference (n, i, j)": lambda: routing_reference(u_hat, iterations=3),
    }
    with torch.no_grad():
        fast = {k: v for k, v in steps.items() if not k.startswith("loop")}
        med = interleaved(fast, device, max(repeats, 3), min_seconds=0.2)
        med.update(interleaved({k: steps[k] for k in steps if k not in fast}, device, repeats, 0.0, warmup=0))
    loops = med["loop reference (n, i, j)"]
    for name, seconds in med.items():
        print(f"{name:30s} {seconds * 1e3:10.2f} ms   loops/this {loops / seconds:10.1f}x")


def routing_layer(device, batch_size, repeats, iterations: int = 3) -> None:
    """The part capslib fuses: u_hat = W u and routing, from u to v; capslib vs plain, +/- backward."""
    print(f"\n## Predictions + routing (u -> v), B={batch_size}, R={iterations}: capslib fused vs plain einsums")
    generator = torch.Generator().manual_seed(4)
    u = capslib.squash(torch.randn(batch_size, 1152, 8, generator=generator), dim=-1).to(device).requires_grad_()
    weight = (0.05 * torch.randn(1152, 10, 16, 8, generator=generator)).to(device).requires_grad_()
    grad_v = torch.randn(batch_size, 10, 16, generator=generator).to(device)

    def plain(u, weight):
        u_hat = torch.einsum("bid,ijed->bije", u, weight)  # (B, N_in, N_out, D_out)
        logits = torch.zeros(u_hat.shape[:3], device=device)  # (B, N_in, N_out)
        for r in range(iterations):
            v = capslib.squash(torch.einsum("bij,bije->bje", torch.softmax(logits, dim=2), u_hat), dim=-1)
            if r + 1 < iterations:
                logits = logits + torch.einsum("bije,bje->bij", u_hat, v)
        return v

    def fused(u, weight):
        return routed_capsules(u, weight, iterations)[0]

    def backward_of(fn):
        def step():
            torch.autograd.grad(fn(u, weight), (u, weight), grad_v)

        return step

    def forward_of(fn):
        def step():
            with torch.no_grad():
                fn(u, weight)

        return step

    for label, wrap in (("forward + backward", backward_of), ("forward, no grad", forward_of)):
        med = interleaved({"capslib": wrap(fused), "plain": wrap(plain)}, device, max(repeats, 3), min_seconds=0.2)
        print(
            f"{label:20s} capslib {med['capslib'] * 1e3:8.1f} ms   plain {med['plain'] * 1e3:8.1f} ms   "
            f"plain/capslib {med['plain'] / med['capslib']:5.2f}x"
        )


def profile_step(device, batch_size, rows: int = 15) -> None:
    print(f"\n## torch.profiler: one capslib training step at batch {batch_size}, by self time")
    step, _ = make_steps("capslib", device, batch_size)
    step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=40))


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one repetition, no minimum time (tests)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--batch-size", type=int, default=100, help="batch of the headline and memory sections")
    p.add_argument("--batch-sizes", default="1,32,100,256", help="batch sizes of the table")
    p.add_argument("--iterations", default="1,3,10", help="routing iterations of the table")
    p.add_argument("--routing-batch", type=int, default=2, help="batch of the routing-alone comparison")
    p.add_argument("--no-profile", action="store_true", help="skip the torch.profiler table")
    p.add_argument(
        "--routing-implementation",
        choices=capslib.ROUTING_IMPLEMENTATIONS,
        default="auto",
        help="capslib's routing implementation in every section but 'fused vs reference'",
    )
    p.add_argument("--memory-child", choices=IMPLS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global ROUTING_IMPLEMENTATION
    ROUTING_IMPLEMENTATION = args.routing_implementation
    if args.threads:
        torch.set_num_threads(args.threads)
    device = capslib.get_device(args.device)
    if args.memory_child:
        print(json.dumps(_memory_child(args.memory_child, device, args.batch_size)))
        return

    repeats, min_seconds = (1, 0.0) if args.quick else (7, 0.0)
    table_repeats, table_min = (1, 0.0) if args.quick else (5, 0.5)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# capslib performance: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    path = resolve_routing_implementation(ROUTING_IMPLEMENTATION, device)
    print(f"capslib routing implementation: {path} (--routing-implementation {ROUTING_IMPLEMENTATION})")

    print("\n## Machine: fp32 matmul 2048x2048, all threads")
    print(f"matmul rate: {matmul_gflops(device, repeats=3 if args.quick else 10):.1f} GFLOP/s")

    print("\n## Model: analytic FLOPs per image (2 per multiply-add; training = 3x forward)")
    flops = flops_per_image(capslib.CapsNet())
    forward = sum(flops.values())
    for part, n in flops.items():
        print(f"{part:14s} {n / 1e6:9.2f} MFLOP  {100 * n / forward:5.1f}%")
    print(f"{'forward':14s} {forward / 1e9:9.3f} GFLOP\n{'training':14s} {3 * forward / 1e9:9.3f} GFLOP")

    headline(device, args.batch_size, repeats, min_seconds, flops)
    sweep(
        device,
        [int(b) for b in args.batch_sizes.split(",")],
        [int(r) for r in args.iterations.split(",")],
        table_repeats,
        table_min,
    )
    fused_vs_reference(
        device, sorted({args.batch_size, max(int(b) for b in args.batch_sizes.split(","))}), table_repeats, table_min
    )
    memory(device, args.batch_size, torch.get_num_threads(), ROUTING_IMPLEMENTATION)
    routing_layer(device, args.batch_size, 1 if args.quick else 5)
    routing_alone(device, args.routing_batch, 1 if args.quick else 3)
    if not args.no_profile:
        profile_step(device, args.batch_size)
    print(f"\nmatmul rate at the end: {matmul_gflops(device, repeats=3):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
