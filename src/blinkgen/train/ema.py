"""Exponential moving average of weights (the weights we ship: smoother than the last step)."""
from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def warm_decay(self, step: int) -> float:
        # Short runs would otherwise average mostly the random init (as in timm / DiT practice).
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = self.warm_decay(step)
        ema_p = list(self.model.parameters())
        src = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src, 1.0 - d)  # one fused launch instead of one per tensor
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
