"""What :func:`capslib.training.fit` sets up before the first step: the settings (a resumed run's
own), the device, the model, and the optimizer state of the run.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..baselines import BASELINES, baseline_cnn
from ..data.multimnist import CANVAS
from ..efficient_capsnet import ITERATIVE_ROUTINGS, EfficientCapsNet
from ..model import CapsNet
from ..pretrained import model_from_config
from ..utils import get_device
from .checkpoints import RunState, initial_weights, restore
from .config import MULTIMNIST, RUN_SETTINGS, TrainConfig
from .distributed import World, device_for

__all__ = ["with_overrides", "check_world", "set_up_device", "with_resumed_settings", "build_model", "start_run"]


def with_overrides(config: TrainConfig | None, overrides: dict) -> TrainConfig:
    """A validated copy of ``config`` (default: ``TrainConfig()``) with ``overrides`` applied."""
    config = config or TrainConfig()
    names = [f.name for f in fields(TrainConfig)]
    for key in overrides:
        if key not in names:
            raise ValueError(f"unknown training setting {key!r}; TrainConfig has {sorted(names)}")
    config = replace(config, **overrides)
    config.validate()
    return config


def check_world(config: TrainConfig, world: World) -> None:
    """``ValueError`` for settings a run on several processes cannot honour."""
    if not world.distributed:
        return
    if config.batch_size % world.size:
        suggestion = config.batch_size // world.size * world.size or world.size
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of the world size {world.size}: every process "
            f"trains on an equal share of each batch (e.g. --batch-size {suggestion})"
        )
    if config.compile:
        raise ValueError("--compile is not supported under torchrun yet: drop --compile or run one process")


def set_up_device(config: TrainConfig, world: World | None = None) -> tuple[TrainConfig, torch.device]:
    """Set the CPU threads; pick the device (under torchrun: this process's GPU, or the CPU). The
    returned config records the threads used."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = device_for(world, config.device) if world is not None and world.distributed else get_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    return replace(config, threads=torch.get_num_threads()), device


def with_resumed_settings(config: TrainConfig, saved: dict) -> tuple[TrainConfig, list[str]]:
    """``config`` with the checkpoint's settings ``saved`` for every setting that defines the run
    (:data:`capslib.training.config.RUN_SETTINGS`: the model, the loss, the data, the optimisation),
    or it would not continue the same run; and a note for each that ``config`` asked otherwise."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    kept = {name: saved.get(name, defaults[name]) for name in RUN_SETTINGS}  # older checkpoints lack newer settings
    notes = [
        f"{name}={value!r} (not {getattr(config, name)!r})"
        for name, value in kept.items()
        if getattr(config, name) != value
    ]
    return replace(config, **kept), notes


def build_model(model: nn.Module | None, config: TrainConfig, checkpoint: dict | None) -> nn.Module:
    """``model``, or the model the checkpoint or the config describes (a CapsNet, 36x36 for
    MultiMNIST, an Efficient-CapsNet, or a baseline CNN; a capsule network routes with
    ``config.routing``, or its own default); ``init_from`` loaded into it unless resuming (a checkpoint's
    own weights come later, in :func:`start_run`)."""
    if model is None:
        if checkpoint is not None and "model_config" in checkpoint:
            model = model_from_config(checkpoint["model_config"])
        elif config.model == "efficient-capsnet":
            if config.dataset == MULTIMNIST:
                raise ValueError(f"--model efficient-capsnet takes 28x28 images, not --dataset {MULTIMNIST} (36x36)")
            routing = config.routing or "self_attention"
            # a routing that does not iterate records 1 iteration, not the setting's default of 3
            model = EfficientCapsNet(
                routing=routing,
                routing_iterations=config.routing_iterations if routing in ITERATIVE_ROUTINGS else None,
                reconstruction=config.reconstruction,
            )
        elif config.model in BASELINES:
            if config.dataset == MULTIMNIST:
                raise ValueError(
                    f"--dataset {MULTIMNIST} trains a CapsNet (two digits need two long capsules); "
                    f"got --model {config.model}"
                )
            if config.routing is not None:
                raise ValueError(f"--routing {config.routing} routes capsules; --model {config.model} has none")
            model = baseline_cnn(config.model)
        else:
            shape = (1, CANVAS, CANVAS) if config.dataset == MULTIMNIST else (1, 28, 28)
            model = CapsNet(
                image_shape=shape,
                routing_iterations=config.routing_iterations,
                reconstruction=config.reconstruction,
                routing=config.routing or "dynamic",
            )
    if config.init_from and checkpoint is None:
        model.load_state_dict(initial_weights(config.init_from), strict=True)
    return model


def update_average(ema: AveragedModel, model: nn.Module) -> None:
    """One step of the weight average: ``ema``'s parameters move towards ``model``'s; its buffers
    (BatchNorm's running statistics) are copied, not averaged. An average of running statistics
    starts from their initial values (variance 1) and stays biased by them for thousands of steps:
    an Efficient-CapsNet validated through such an average scored 28% after 2 epochs where its own
    weights scored 99%."""
    ema.update_parameters(model)
    with torch.no_grad():
        for averaged, live in zip(ema.module.buffers(), model.buffers(), strict=True):
            averaged.copy_(live)


def start_run(model: nn.Module, config: TrainConfig, checkpoint: dict | None) -> RunState:
    """Adam, exponential learning-rate decay and (with ``ema_decay``) a weight average for ``model``,
    at epoch 0 or where ``checkpoint`` left off."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ema = None
    if config.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    run = RunState(model, optimizer, scheduler, ema)
    if checkpoint is not None:
        restore(run, checkpoint)
    return run
