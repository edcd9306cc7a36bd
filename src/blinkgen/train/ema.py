"""Exponential moving average of weights (the weights we ship: smoother than the last step)."""
from __future__ import annotations

import copy
import math

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def warm_decay(self, step: int) -> float:
        """The decay applied at `step` (0-based): min(decay, (1 + step) / (10 + step)), the warm-up
        of diffusers' EMAModel (without use_ema_warmup). Short runs would otherwise average mostly
        the random init. Until `reached_at(decay)` the average spans about the last ninth of the
        steps whatever `decay` is, so two EMAs of different decays are identical before then."""
        return warm_decay(self.decay, step)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = self.warm_decay(step)
        ema_p = list(self.model.parameters())
        src = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src, 1.0 - d)  # one fused launch instead of one per tensor
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def warm_decay(decay: float, step: int) -> float:
    """EMA.warm_decay as a function: decay in (0, 1), step >= 0 -> the decay in (0, decay]."""
    return min(decay, (1.0 + step) / (10.0 + step))


def reached_at(decay: float) -> int:
    """The first step at which the warm-up reaches `decay` (0.999 -> 8,990; 0.9995 -> 17,990):
    the smallest integer s >= 0 with (1 + s) / (10 + s) >= decay. Raises ValueError unless
    0 < decay < 1."""
    if not 0 < decay < 1:
        raise ValueError(f"an EMA decay must be in (0, 1), got {decay}")
    s = max(0, math.ceil((10 * decay - 1) / (1 - decay) - 1e-9))
    while s > 0 and warm_decay(decay, s - 1) >= decay:  # float rounding: step back to the first
        s -= 1
    while warm_decay(decay, s) < decay:
        s += 1
    return s


def short_run_warnings(steps: int, decay: float, extra: list[float], export: str | None = None) -> list[str]:
    """What a run of `steps` steps should be told about its EMA lengths: for the first listed decay
    (--ema-decay, then each --ema-extra) that its warm-up never reaches, where that EMA ends; for
    every later unreached decay, that it will export a copy of that EMA (all decays unreached by the
    last step give the same weights). The lines name `blinkgen train`'s flags; export (what the
    run exports, e.g. "adapter") words them for a command without EMA flags (`blinkgen finetune`,
    whose decay is fixed), naming the decay and what it means for the export instead."""
    last = max(0, steps - 1)
    flags = [("--ema-decay", decay)] + [("--ema-extra", d) for d in extra]
    unreached = [(flag, d) for flag, d in flags if warm_decay(d, last) < d]
    if not unreached:
        return []
    (flag, d), rest = unreached[0], unreached[1:]
    if export is not None:
        out = [f"the EMA decay {d:g} is reached only at step {reached_at(d):,}: with {steps:,} steps the EMA "
               f"ends at decay {warm_decay(d, last):.5f}, so the exported {export} averages about the last ninth "
               "of the steps (the EMA's warm-up)"]
        return out + [f"the EMA decay {x:g} will export the same weights as {d:g}" for _, x in rest]
    out = [f"{flag} {d:g} is reached only at step {reached_at(d):,}: with {steps:,} steps the EMA ends at "
           f"decay {warm_decay(d, last):.5f} (its warm-up, about the last ninth of the steps)"]
    return out + [f"{f} {x:g} will export the same weights as {flag} {d:g}" for f, x in rest]
