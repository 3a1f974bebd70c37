"""Training and inference throughput of the default CapsNet (or of Efficient-CapsNet) on this machine.

    python benchmarks/throughput.py                 # batch 100, auto device
    python benchmarks/throughput.py --device cpu --batch-size 100 --steps 10
    python benchmarks/throughput.py --model efficient-capsnet --routing em --batch-size 64 --threads 2

Training = forward + margin/reconstruction loss + backward + Adam step, fp32. Prints images/s
and the time one epoch of 55,000 training images (+ 5,000 validation images) would take.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import capslib
from capslib.training import train_step
from capslib.training.compiling import compiled_or_eager


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def measure(
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int = 2,
    amp: bool = False,
    compile: bool = False,
    model_name: str = "capsnet",
    routing: str | None = None,
) -> dict:
    """Images/s of training and inference steps: ``steps`` timed iterations after ``warmup`` untimed ones,
    of ``capslib.CapsNet`` (``model_name="capsnet"``) or ``capslib.EfficientCapsNet`` (``"efficient-capsnet"``),
    each with its default routing unless ``routing`` names another."""
    torch.manual_seed(0)
    options = {} if routing is None else {"routing": routing}
    if model_name == "capsnet":
        model = capslib.CapsNet(**options).to(device)
    elif model_name == "efficient-capsnet":
        model = capslib.EfficientCapsNet(**options).to(device)
    else:
        raise ValueError(f"model_name must be 'capsnet' or 'efficient-capsnet', got {model_name!r}")
    run = compiled_or_eager(model, enabled=compile)  # same parameters as model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp)

    def one_train_step():  # as capslib.training.fit runs it
        train_step(run, optimizer, x, y, amp=amp and device.type == "cuda")

    @torch.no_grad()
    def infer_step():
        with autocast():
            run(x)

    results = {}
    for name, step, mode in (("train", one_train_step, True), ("inference", infer_step, False)):
        model.train(mode)
        for _ in range(warmup):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        results[name] = batch_size * steps / (time.perf_counter() - start)
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=10, help="timed iterations of each kind")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    p.add_argument("--model", default="capsnet", choices=["capsnet", "efficient-capsnet"])
    p.add_argument("--routing", default=None, choices=list(capslib.ROUTING_ALGORITHMS), help="default: the model's")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = capslib.get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    r = measure(
        device,
        args.batch_size,
        args.steps,
        amp=args.amp,
        compile=args.compile,
        model_name=args.model,
        routing=args.routing,
    )
    epoch_seconds = 55_000 / r["train"] + 5_000 / r["inference"]
    precision = ("bf16 autocast" if args.amp else "fp32") + (", torch.compile" if args.compile else "")
    print(
        f"{args.model}, routing {args.routing or 'default'}, batch {args.batch_size} ({precision}): "
        f"training {r['train']:.1f} images/s, "
        f"inference {r['inference']:.1f} images/s"
    )
    print(f"one epoch (55,000 train + 5,000 validation images): about {epoch_seconds / 60:.1f} min")
    return {**r, "epoch_seconds": epoch_seconds}


if __name__ == "__main__":
    main()
