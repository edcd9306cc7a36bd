"""The task protocol: what the one training loop (loop.py) needs from a family's training task.

A task is built as `Task(cfg, train, val, device)` (cfg: TrainConfig; train/val: ImageCaptionSet,
the loop's deterministic split) and provides:

    model: nn.Module      every weight the run trains, checkpointed whole (model.safetensors) and
                          averaged by the EMA; a GAN holds its generator and discriminator in one
                          container (e.g. nn.ModuleDict) here
    n_train: int          images the batch order draws from (== len(train))
    teacher: nn.Module | None
                          an optional frozen network the losses read (distillation): the loop moves
                          it to the device, sets eval() and requires_grad_(False), and never
                          optimises, averages or checkpoints it; it must not be part of `model`
    bind_ema(ema_model)   optional: the loop hands the task the EMA copy of `model` once, before the
                          first step (and keeps it current after every step); a task whose losses
                          read the averaged weights (self-consistency targets of distillation)
                          keeps it. It must only be read, under no_grad. Default: ignored
    draw(g, B) -> dict[str, Tensor]
                          everything random for the WHOLE global batch of B, from the CPU
                          generator g seeded by (seed, step); each process takes its rows. So a
                          step does not depend on how many processes share it, and resuming needs
                          no RNG state beyond the step number
    optimizers(model, cfg, device) -> dict[str, Optimizer]
                          named optimizers over disjoint parameter sets (default: one AdamW named
                          "model" over all of `model`); param group key "lr_scale" scales the
                          loop's scheduled learning rate for that group (default 1)
    cpu_sdpa_backend: str   optional: "math" or "default" (the default), the attention kernel of
                          the training steps on a CPU when the run's sdpa_backend is "auto"
    losses() -> dict[str, loss function]
                          one loss per optimizer name, in the order the loop steps them; each
                          `loss(model, idx, rnd) -> (loss tensor, logs dict)` for the images idx
                          (b,) of this process's rows and their rows of rnd. Default:
                          {"model": self.loss}. Each phase is its own method (a GAN: a
                          discriminator loss and a generator loss), never one method switched by
                          an index. Every entry of logs (scalars) reaches TensorBoard
    validate(ema_model) -> dict[str, float]
                          held-out metrics, deterministic; must include "val_loss" (lower is
                          better: early stopping and best-checkpoint tracking read it)
    samples(ema_model, step) -> PIL.Image
                          a grid for run/samples/ (only called when sample_every > 0)
    export(ema_model, folder, extra) -> Path
                          write the final model folder; extra: provenance for its config.json

One step, per loss name in order: gradients cleared, loss computed under autocast, backward,
gradient clipping of that optimizer's parameters (cfg.grad_clip), optimizer step. Then the EMA.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import UserInputError

DEFAULT_OPTIMIZER = "model"  # the name of a task's single optimizer (and of a pre-protocol checkpoint's)

LossFn = Callable[[torch.nn.Module, torch.Tensor, dict], tuple[torch.Tensor, dict]]


def fused_ok(device) -> bool:
    """Fused AdamW (one kernel for all parameters) exists for CPU and CUDA tensors in torch >= 2.4;
    measured no slower than for-each here (bench/results/train_speed.json)."""
    return torch.device(device).type in ("cpu", "cuda")


def adamw(params, cfg, device, lr_scale: float = 1.0) -> torch.optim.AdamW:
    """The loop's default optimizer: AdamW(cfg.lr, betas (0.9, 0.99), cfg.weight_decay), fused
    where torch has it for the device. lr_scale: see the module doc (kept out of the param group
    when 1, so the optimizer state stays what the loop wrote before named optimizers)."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay,
                            fused=fused_ok(device))
    if lr_scale != 1.0:
        for g in opt.param_groups:
            g["lr_scale"] = lr_scale
    return opt


class Task:
    """Base class with the protocol's defaults (see the module doc). Subclasses set `model`,
    `n_train` (and `teacher` if they have one) in __init__ and implement draw, loss (or losses),
    validate, samples and export."""

    model: torch.nn.Module
    n_train: int
    teacher: torch.nn.Module | None = None
    # The SDPA kernel TrainConfig.sdpa_backend "auto" trains with on a CPU: "math" where
    # bench/bench_train_speed.py measured SDPA's math backend faster for the family's networks than
    # the CPU flash-attention kernel (the denoisers at 16-64 tokens), else torch's "default".
    cpu_sdpa_backend: str = "default"

    def bind_ema(self, ema_model: torch.nn.Module) -> None:
        """Called once by the loop with the EMA copy of `model`; default: not needed."""

    def warm_start(self, folder) -> None:
        """Load a trained model folder's weights into `model` (train/warm_start.py: --init-from);
        UserInputError when the folder holds another network. Default: not supported."""
        raise UserInputError(f"--init-from is not supported for {type(self).__name__} yet; "
                             "diffusion runs support it")

    def optimizers(self, model: torch.nn.Module, cfg, device) -> dict[str, torch.optim.Optimizer]:
        return {DEFAULT_OPTIMIZER: adamw(model.parameters(), cfg, device)}

    def losses(self) -> dict[str, LossFn]:
        return {DEFAULT_OPTIMIZER: self.loss}

    def draw(self, g: torch.Generator, B: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, idx: torch.Tensor, rnd: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def validate(self, ema_model: torch.nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def samples(self, ema_model: torch.nn.Module, step: int):
        raise NotImplementedError

    def export(self, ema_model: torch.nn.Module, folder, extra: dict):
        raise NotImplementedError
