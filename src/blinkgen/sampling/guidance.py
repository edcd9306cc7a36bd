"""Classifier-free guidance as a wrapper around the model function (never inside the network).

The conditional and unconditional passes run as ONE batch of 2B (cheaper than two calls on every
backend); `guidance == 1` skips the unconditional half entirely."""
from __future__ import annotations

from typing import Callable

import torch

from ..text.encoder import TextBatch


def cfg_wrap(net: Callable, cond: TextBatch, uncond: TextBatch, guidance: float) -> Callable:
    """Returns model_fn(x, t) -> v for the samplers in `flow.py`.
    net(x, t, states, mask, pooled) -> v. cond/uncond are batches of size B (same length L)."""
    if guidance == 1.0:
        return lambda x, t: net(x, t, cond.states, cond.mask, cond.pooled)
    both = TextBatch.cat([cond, uncond])

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = net(torch.cat([x, x]), torch.cat([t, t]), both.states, both.mask, both.pooled)  # (2B, ...)
        v_c, v_u = v.chunk(2)
        return v_u + guidance * (v_c - v_u)

    return model_fn
