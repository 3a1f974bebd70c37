"""Training: one function for notebooks (:func:`fit`) and a CLI on top of it.

    python -m capslib.train --epochs 50 --out runs/capsnet          # train (resumable)
    python -m capslib.train --out runs/capsnet --resume             # continue where it stopped

Honest protocol: the LAST ``val_size`` (5,000) training images validate and choose the best
epoch; the model trains on the others (55,000); the test set is never touched here (see
:mod:`capslib.evaluate`). Shift augmentation (up to 2 px) is applied to training batches only.

Checkpoints (``<out>/last.pt``) are written after every epoch and every ``checkpoint_minutes``
within one, atomically (write to a temporary file, then rename), with the optimizer, scheduler,
the data-order generator and the config, so an interrupted run resumes exactly. ``<out>/best.pt``
holds the model of the best validation epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .compiling import compiled_or_eager
from .data import load_dataset, random_shift, split_train_val, to_tensors
from .functional import check_labels, margin_loss, mark_labels_checked, reconstruction_loss
from .utils import atomic_write, get_device, seed_everything

__all__ = ["TrainConfig", "fit", "train_step", "default_micro_batch", "total_loss", "save_atomic", "main"]


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint and in ``<out>/config.json``."""

    epochs: int = 50  # passes over the 55,000 training images
    batch_size: int = 128  # the paper's official code uses 128
    lr: float = 1e-3  # Adam's learning rate at epoch 0
    lr_decay: float = 0.96  # multiply the learning rate by this after every epoch
    routing_iterations: int = 3  # used when fit() builds the model itself
    reconstruction: bool = True  # decoder on/off (when fit() builds the model)
    reconstruction_weight: float = 0.0005  # paper: scaled down so it does not dominate the margin loss
    max_shift: int = 2  # shift augmentation of training images, in pixels (0 turns it off)
    dataset: str = "mnist"  # "mnist" or "fashion-mnist"
    val_size: int = 5000  # the last val_size training images validate
    train_limit: int | None = None  # use only the first N training images (quick experiments)
    device: str = "auto"  # auto: CUDA, then MPS, then CPU
    seed: int = 0  # seeds model init, data order and augmentation
    threads: int | None = None  # CPU threads (recorded; fixed threads + seed = deterministic on CPU)
    out_dir: str = "runs/capsnet"  # checkpoints, config.json, history.json, TensorBoard logs (tb/)
    checkpoint_minutes: float = 10.0  # also checkpoint within an epoch this often
    amp: bool = False  # CUDA only: bf16 autocast (squash and the losses stay fp32)
    tensorboard: bool = True  # write TensorBoard logs to <out>/tb
    eval_batch_size: int = 500  # batch size for validation
    progress: bool = True  # tqdm progress bars
    init_from: str | None = None  # start from these weights: "pretrained", a checkpoint or a state dict
    stop_after_batches: int | None = None  # stop (checkpointed, as if killed) after this many batches
    # Polyak averaging: keep an exponential moving average of the weights (e.g. 0.999 per step).
    # When set, validation, best.pt and the returned model use the AVERAGED weights.
    ema_decay: float | None = None
    compile: bool = False  # opt-in torch.compile of the training step's model (eager if it cannot compile)
    # Forward/backward each batch in slices of this many images, gradients summed: the same update,
    # less memory, and on CPU faster (small tensors are recycled from the heap, big ones are
    # page-faulted in fresh every step). None: automatic, see default_micro_batch().
    micro_batch: int | None = None
    extra: dict = field(default_factory=dict)  # free-form notes recorded with the run

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work."""
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.routing_iterations >= 1, "routing_iterations must be >= 1"),
            (self.reconstruction_weight >= 0, "reconstruction_weight must be >= 0"),
            (self.max_shift >= 0, "max_shift must be >= 0"),
            (self.checkpoint_minutes > 0, "checkpoint_minutes must be > 0"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be None or in (0, 1)"),
            (self.micro_batch is None or self.micro_batch >= 1, "micro_batch must be None or >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {self}")


def total_loss(output, images: torch.Tensor, labels: torch.Tensor, reconstruction_weight: float = 0.0005):
    """Margin loss + ``reconstruction_weight`` x reconstruction loss (Section 4.1).

    Args:
        output: a :class:`capslib.CapsNetOutput` (``lengths`` ``(B, N_out)``, ``reconstructions``
            ``(B, C, H, W)`` or None).
        images: ``(B, C, H, W)`` the (augmented) inputs the model saw.
        labels: ``(B,)`` true classes.

    Returns:
        ``(total, margin, reconstruction)`` scalar tensors (reconstruction is 0 without a decoder).
    """
    margin = margin_loss(output.lengths.float(), labels)
    if output.reconstructions is None:
        recon = margin.new_zeros(())
    else:
        recon = reconstruction_loss(output.reconstructions.float(), images.float())
    return margin + reconstruction_weight * recon, margin, recon


def default_micro_batch(model: nn.Module, device: torch.device) -> int | None:
    """32 on CPU for models without batch norm (whose statistics would change), else None (whole batch)."""
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return 32 if device.type == "cpu" and not has_batch_norm else None


def train_step(
    model,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    reconstruction_weight: float = 0.0005,
    micro_batch: int | None = None,
    amp: bool = False,
) -> dict:
    """One optimizer step on a batch: forward, margin + reconstruction loss, backward, step.

    With ``micro_batch``, forward and backward run on slices of that many images and their
    gradients are summed, each slice's loss weighted by its share of the batch: the gradient is
    the batch mean's, as without slicing (to float tolerance), for any model whose examples do not
    interact (no batch norm).

    Args:
        model: ``model(x, y)`` returns ``lengths`` ``(B, N_out)`` and ``reconstructions`` (or None).
        images: ``(B, C, H, W)``; labels: ``(B,)``.
        amp: bf16 autocast (CUDA).

    Returns:
        ``loss``, ``margin``, ``reconstruction`` (batch means) and ``correct`` (count), detached
        tensors on the batch's device: reading them does not wait for the device.
    """
    if micro_batch is not None and micro_batch < 1:
        raise ValueError(f"micro_batch must be None or >= 1, got {micro_batch}")
    batch = len(labels)
    size = micro_batch or batch
    optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(4, device=labels.device)  # loss, margin, reconstruction (batch means), correct
    # Whole batch: the tensors themselves (a split would make new ones, whose labels get checked again).
    chunks = [(images, labels)] if size >= batch else zip(images.split(size), labels.split(size), strict=True)
    for x, y in chunks:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            output = model(x, y)  # decoder masked with the TRUE label
        loss, margin, recon = total_loss(output, x, y, reconstruction_weight)
        share = len(y) / batch
        (loss * share if share != 1 else loss).backward()
        with torch.no_grad():
            correct = (output.lengths.argmax(dim=1) == y).sum()
            sums += torch.stack([loss * share, margin * share, recon * share, correct.float()])
    optimizer.step()
    loss, margin, recon, correct = sums.unbind()
    return {"loss": loss, "margin": margin, "reconstruction": recon, "correct": correct}


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _write_json_atomic(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def _initial_weights(source: str) -> dict:
    """State dict (float32) from ``"pretrained"``, a training checkpoint or a saved state dict."""
    from .pretrained import PRETRAINED_NAME, pretrained_dir

    path = pretrained_dir() / f"{PRETRAINED_NAME}.pt" if source == "pretrained" else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"init_from: no weights at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    return {k: v.float() for k, v in state.items()}


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device, batch_size: int) -> float:
    """Fraction correct over ALL of ``images`` ``(N, C, H, W)`` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True)
        y = labels[start : start + batch_size].to(device, non_blocking=True)
        correct += (model(x).lengths.argmax(dim=1) == y).sum().item()
    model.train(was_training)
    return correct / len(images)


def _totals(carried: dict, running: torch.Tensor, seen: int) -> dict:
    """Epoch sums so far: ``carried`` (from a resumed checkpoint) + ``running`` (on the device)."""
    loss_sum, margin_sum, recon_sum, correct = running.tolist()
    return {
        "loss": carried["loss"] + loss_sum,
        "margin": carried["margin"] + margin_sum,
        "reconstruction": carried["reconstruction"] + recon_sum,
        "correct": carried["correct"] + round(correct),
        "seen": seen,
    }


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One generator per epoch, derived from the seed: data order and shifts are reproducible and
    # a resumed run replays the same epoch exactly.
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def fit(
    model: nn.Module | None = None,
    train_set=None,
    val_set=None,
    config: TrainConfig | None = None,
    resume: bool = False,
    **overrides,
) -> dict:
    """Train ``model`` with Adam, exponential learning-rate decay and shift augmentation.

    Args:
        model: any capslib-style model: ``model(x, y)`` returns an object with ``lengths``
            ``(B, N_out)`` and ``reconstructions`` (or None). None builds ``capslib.CapsNet``
            from the config (and, on resume, from the checkpoint).
        train_set, val_set: datasets of ``(image (C, H, W), label)``; None loads
            ``config.dataset`` and splits off the last ``config.val_size`` images to validate.
        config: a :class:`TrainConfig`; keyword ``overrides`` replace its fields.
        resume: continue from ``<out_dir>/last.pt`` if it exists.

    Returns:
        A dict with ``history`` (one dict per epoch), ``best_val_accuracy``, ``best_epoch``,
        ``out_dir`` and ``model`` (the trained model, last epoch's weights; with ``ema_decay``
        the averaged model, whose weights validated and went into ``best.pt``).
    """
    from .model import CapsNet

    config = config or TrainConfig()
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"unknown training setting {key!r}; TrainConfig has {sorted(asdict(config))}")
        setattr(config, key, value)
    config.validate()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    if config.threads:
        torch.set_num_threads(config.threads)
    config.threads = torch.get_num_threads()
    device = get_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels

    checkpoint = None
    if resume and last_path.exists():
        checkpoint = torch.load(last_path, map_location="cpu", weights_only=True)
        saved = checkpoint["config"]
        for key in ("seed", "batch_size", "lr", "lr_decay", "max_shift", "val_size", "train_limit", "dataset"):
            setattr(config, key, saved[key])
        config.ema_decay = saved.get("ema_decay")

    seed_everything(config.seed)
    if model is None:
        if checkpoint is not None and "model_config" in checkpoint:
            model = CapsNet(**checkpoint["model_config"])
        else:
            model = CapsNet(routing_iterations=config.routing_iterations, reconstruction=config.reconstruction)
    if config.init_from and checkpoint is None:
        model.load_state_dict(_initial_weights(config.init_from), strict=True)
    model.to(device)

    if train_set is None or val_set is None:
        full = load_dataset(config.dataset, train=True)
        train_set, val_set = split_train_val(full, config.val_size)
    train_x, train_y = to_tensors(train_set)  # (N, C, H, W), (N,)
    if config.train_limit:
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    val_x, val_y = to_tensors(val_set)
    # Check every label once, before any training: a bad one fails now, not mid-epoch, and the
    # batches need no check of their own (on a GPU, each would be a synchronisation).
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None:
        for name, labels in (("training", train_y), ("validation", val_y)):
            try:
                check_labels(labels, len(labels), num_classes)
            except ValueError as err:
                raise ValueError(f"{name} set: {err}") from None
    if device.type != "cpu":  # the whole dataset fits on any GPU: no loader in the hot loop
        train_x, train_y, val_x, val_y = (t.to(device) for t in (train_x, train_y, val_x, val_y))

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ema = None
    if config.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    eval_model = ema.module if ema is not None else model  # the weights that validate and ship
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    history: list[dict] = []
    start_epoch, start_batch, best_val, best_epoch, elapsed_before = 0, 0, -1.0, -1, 0.0
    generator_state = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint.get("train_model", checkpoint["model"]))
        if ema is not None:
            ema.module.load_state_dict(checkpoint["model"])
            ema.n_averaged.fill_(checkpoint["ema_n_averaged"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        history = checkpoint["history"]
        start_epoch, start_batch = checkpoint["epoch"], checkpoint["batch_index"]
        best_val, best_epoch = checkpoint["best_val_accuracy"], checkpoint["best_epoch"]
        elapsed_before = checkpoint["elapsed_seconds"]
        generator_state = checkpoint.get("generator_state")
        partial = checkpoint.get("partial_epoch", {})
    _write_json_atomic(asdict(config), out_dir / "config.json")

    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))

    use_amp = config.amp and device.type == "cuda"
    step_model = compiled_or_eager(model, enabled=config.compile)  # shares model's parameters
    micro_batch = config.micro_batch or default_micro_batch(model, device)
    num_batches = math.ceil(len(train_x) / config.batch_size)
    run_start = time.monotonic()
    last_save = time.monotonic()
    batches_this_call, stop_now = 0, False
    model.train()

    def make_checkpoint(epoch: int, batch_index: int, gen_state, partial_epoch: dict) -> dict:
        model_config = dict(getattr(model, "config", {}))
        if model_config:
            model_config["routing_iterations"] = getattr(model, "routing_iterations", None)
        ckpt = {
            "model": eval_model.state_dict(),  # what validated (the averaged weights with ema_decay)
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "config": asdict(config),
            "epoch": epoch,  # the epoch to run next (or the one in progress)
            "batch_index": batch_index,  # batches of that epoch already done
            "generator_state": gen_state,
            "partial_epoch": partial_epoch,
            "history": history,
            "best_val_accuracy": best_val,
            "best_epoch": best_epoch,
            "elapsed_seconds": elapsed_before + time.monotonic() - run_start,
            "torch_version": str(torch.__version__),
        }
        if model_config:
            ckpt["model_config"] = model_config
        if ema is not None:  # the raw weights keep training on resume
            ckpt["train_model"] = model.state_dict()
            ckpt["ema_n_averaged"] = int(ema.n_averaged)
        return ckpt

    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.monotonic()
        generator = _epoch_generator(config.seed, epoch)
        order = torch.randperm(len(train_x), generator=generator)  # (N,)
        carried = {"loss": 0.0, "margin": 0.0, "reconstruction": 0.0, "correct": 0, "seen": 0}
        first_batch = 0
        if epoch == start_epoch and start_batch > 0:
            generator.set_state(generator_state)
            first_batch = start_batch
            carried.update(partial)
        # Sums stay on the device (loss, margin, reconstruction, correct): reading them back every
        # step would stall a GPU. _totals() reads them when they are shown or saved.
        running = torch.zeros(4, dtype=torch.float64, device=device)
        seen = carried["seen"]

        bar = tqdm(
            range(first_batch, num_batches),
            initial=first_batch,
            total=num_batches,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        )
        for batch_index in bar:
            idx = order[batch_index * config.batch_size : (batch_index + 1) * config.batch_size]
            x = train_x[idx.to(train_x.device)]
            y = train_y[idx.to(train_y.device)]
            if config.max_shift:
                x = random_shift(x, config.max_shift, generator=generator)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if num_classes is not None:
                mark_labels_checked(y, num_classes)  # a slice of the checked train_y
            stats = train_step(step_model, optimizer, x, y, config.reconstruction_weight, micro_batch, use_amp)
            if ema is not None:
                ema.update_parameters(model)
            loss, margin, recon = stats["loss"], stats["margin"], stats["reconstruction"]

            n = len(y)
            with torch.no_grad():
                step_sums = torch.stack([loss, margin, recon]).double() * n
                running += torch.cat([step_sums, stats["correct"].double().view(1)])
            seen += n
            if config.progress and (batch_index % 20 == 0 or batch_index + 1 == num_batches):
                shown = _totals(carried, running, seen)
                bar.set_postfix(loss=f"{shown['loss'] / seen:.4f}", acc=f"{shown['correct'] / seen:.4f}")
            if writer is not None and (batch_index % 50 == 0):
                step = epoch * num_batches + batch_index
                writer.add_scalar("loss/total", loss.item(), step)
                writer.add_scalar("loss/margin", margin.item(), step)
                writer.add_scalar("loss/reconstruction", recon.item(), step)
            batches_this_call += 1
            stop_now = config.stop_after_batches is not None and batches_this_call >= config.stop_after_batches
            due = time.monotonic() - last_save > config.checkpoint_minutes * 60
            if (due or stop_now) and batch_index + 1 < num_batches:
                partial_sums = _totals(carried, running, seen)
                save_atomic(make_checkpoint(epoch, batch_index + 1, generator.get_state(), partial_sums), last_path)
                last_save = time.monotonic()
            if stop_now:
                break
        if stop_now and batch_index + 1 < num_batches:
            bar.close()
            break
        bar.close()

        sums = _totals(carried, running, seen)
        val_accuracy = _accuracy(eval_model, val_x, val_y, device, config.eval_batch_size)
        record = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": sums["loss"] / sums["seen"],
            "train_margin_loss": sums["margin"] / sums["seen"],
            "train_reconstruction_loss": sums["reconstruction"] / sums["seen"],
            "train_accuracy": sums["correct"] / sums["seen"],
            "val_accuracy": val_accuracy,
            "val_errors": round((1 - val_accuracy) * len(val_x)),
            "epoch_seconds": time.monotonic() - epoch_start,
        }
        history.append(record)
        scheduler.step()
        improved = val_accuracy > best_val
        if improved:
            best_val, best_epoch = val_accuracy, epoch + 1
            save_atomic(make_checkpoint(epoch + 1, 0, None, {}), best_path)
        save_atomic(make_checkpoint(epoch + 1, 0, None, {}), last_path)
        last_save = time.monotonic()
        _write_json_atomic(history, out_dir / "history.json")
        if writer is not None:
            _log_epoch(writer, eval_model, record, val_x, val_y, device)
        message = (
            f"epoch {epoch + 1:3d}/{config.epochs}  loss {record['train_loss']:.4f}  "
            f"train acc {record['train_accuracy']:.4f}  val acc {val_accuracy:.4f} "
            f"({record['val_errors']} errors){' *' if improved else ''}  lr {record['lr']:.2e}  "
            f"{record['epoch_seconds']:.0f}s"
        )
        tqdm.write(message) if config.progress else print(message, flush=True)
        if stop_now:
            break

    if writer is not None:
        writer.close()
    return {
        "history": history,
        "best_val_accuracy": best_val,
        "best_epoch": best_epoch,
        "out_dir": str(out_dir),
        "model": eval_model,
    }


@torch.no_grad()
def _log_epoch(writer, model, record: dict, val_x, val_y, device) -> None:
    """Per-epoch TensorBoard: accuracies, lr, inputs vs reconstructions, coupling histogram."""
    from torchvision.utils import make_grid

    epoch = record["epoch"]
    writer.add_scalar("accuracy/train", record["train_accuracy"], epoch)
    writer.add_scalar("accuracy/val", record["val_accuracy"], epoch)
    writer.add_scalar("lr", record["lr"], epoch)
    writer.add_scalar("loss/epoch_total", record["train_loss"], epoch)
    was_training = model.training
    model.eval()
    x = val_x[:16].to(device)
    out = model(x)
    model.train(was_training)
    if out.reconstructions is not None:
        grid = make_grid(torch.cat([x, out.reconstructions.float()]).cpu(), nrow=16, pad_value=1.0)
        writer.add_image("inputs_vs_reconstructions", grid, epoch)
    if getattr(out, "coupling", None) is not None:
        writer.add_histogram("coupling_coefficients", out.coupling.float().cpu(), epoch)
    writer.flush()


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m capslib.train",
        description="Train CapsNet (Sabour et al. 2017) on MNIST or Fashion-MNIST; resumable.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    p.add_argument("--lr-decay", type=float, default=defaults.lr_decay, help="per-epoch exponential decay")
    p.add_argument("--routing-iterations", type=int, default=defaults.routing_iterations)
    p.add_argument("--no-decoder", action="store_true", help="train without the reconstruction decoder")
    p.add_argument("--reconstruction-weight", type=float, default=defaults.reconstruction_weight)
    p.add_argument("--max-shift", type=int, default=defaults.max_shift, help="augmentation shift in px")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default=defaults.dataset)
    p.add_argument("--val-size", type=int, default=defaults.val_size)
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--device", default=defaults.device, help="auto, cuda, mps or cpu")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default=defaults.out_dir, help="output directory")
    p.add_argument("--checkpoint-minutes", type=float, default=defaults.checkpoint_minutes)
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="one line per epoch, no bars")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    p.add_argument(
        "--micro-batch", type=int, default=None, help="forward/backward in slices of this size (default: automatic)"
    )
    p.add_argument(
        "--ema-decay", type=float, default=None, help="validate and ship an exponential moving average of the weights"
    )
    p.add_argument(
        "--init-from", default=None, help="start from 'pretrained' (the shipped model), a checkpoint or a state dict"
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        routing_iterations=args.routing_iterations,
        reconstruction=not args.no_decoder,
        reconstruction_weight=args.reconstruction_weight,
        max_shift=args.max_shift,
        dataset=args.dataset,
        val_size=args.val_size,
        train_limit=args.train_limit,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
        out_dir=args.out,
        checkpoint_minutes=args.checkpoint_minutes,
        amp=args.amp,
        tensorboard=not args.no_tensorboard,
        progress=not args.no_progress,
        init_from=args.init_from,
        ema_decay=args.ema_decay,
        compile=args.compile,
        micro_batch=args.micro_batch,
    )
    result = fit(config=config, resume=args.resume)
    print(
        f"best validation accuracy {result['best_val_accuracy']:.4f} at epoch {result['best_epoch']}; "
        f"checkpoints in {result['out_dir']} (best.pt, last.pt)"
    )
    return result


if __name__ == "__main__":
    main()
