"""Speed device: step caching for the DiT's multi-step path (after: Ma, Fang, Wang 2024,
"DeepCache: Accelerating Diffusion Models for Free", which reuses a U-Net's deep features across
adjacent steps; the same idea on a transformer's blocks is the "FirstBlockCache" of the DiT
inference engines).

Why it works: adjacent solver steps feed the network nearly the same input, and what the deep
blocks add to the token stream changes slowly along the path. `StepCache(dit, interval, shallow)`
has the denoiser's call interface; every `interval`-th call runs the whole network and remembers
the deep residual r = h_L - h_k (what the blocks after the first `shallow` ones added); the calls
in between run embed, condition, the first `shallow` blocks, add r, and the head, so they cost
about shallow/depth of a pass. It needs the DiT's split forward (embed -> condition -> blocks ->
head).

One wrapper serves one sampling call: it counts calls, so the pipeline builds a fresh one per
`sample`. The schedule of full and cached calls depends only on the call count, never on the
data, and every row is computed by the same ops as in a plain pass, so an image still depends on
its own request only (tests/unit/test_step_cache.py). The setting is `cache="deep:N"` (or
"deep:N:K" for K shallow blocks); quality and speed are measured in bench/bench_blink.py.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserInputError

_SPEC = re.compile(r"^deep:(\d+)(?::(\d+))?$")
MAX_INTERVAL = 8


def parse_cache(spec: str, depth: int | None = None) -> tuple[int, int]:
    """"deep:N" or "deep:N:K" -> (interval N in 2..MAX_INTERVAL, shallow blocks K, default 1,
    fewer than depth). UserInputError naming the accepted forms otherwise."""
    m = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if not m:
        raise UserInputError(f"cache must be 'deep:N' (a full pass every N steps, 2 <= N <= {MAX_INTERVAL}) "
                             f"or 'deep:N:K' (K shallow blocks), got {spec!r}")
    n, k = int(m.group(1)), int(m.group(2) or 1)
    if not 2 <= n <= MAX_INTERVAL:
        raise UserInputError(f"cache interval must be between 2 and {MAX_INTERVAL}, got {n}")
    if k < 1 or (depth is not None and k >= depth):
        raise UserInputError(f"cache shallow blocks must be between 1 and {(depth or 2) - 1}, got {k}")
    return n, k


class StepCache:
    """The DiT with its deep blocks cached across calls (module doc). Call it like the DiT:
    (x (B, C, S, S), t (B,), ctx (B, L, 384), mask (B, L), pooled (B, 384), d=None) -> (B, C, S, S).
    Attributes: calls, full_calls (passes that ran every block)."""

    def __init__(self, dit, interval: int, shallow: int = 1):
        if not all(hasattr(dit, m) for m in ("embed", "condition", "blocks", "head")):
            raise UserInputError(f"step caching needs the DiT's split forward; {type(dit).__name__} has none")
        self.dit, self.interval, self.shallow = dit, interval, shallow
        self.cfg = dit.cfg
        self.calls = self.full_calls = 0
        self._residual: torch.Tensor | None = None

    def __call__(self, x, t, ctx, mask, pooled, d=None) -> torch.Tensor:
        dit, k = self.dit, self.shallow
        h = dit.embed(x)  # (B, N, D)
        c, mod, kv = dit.condition(t, ctx, pooled, h.dtype, d)
        for blk in dit.blocks[:k]:
            h = blk(h, mod, kv, mask)
        r = self._residual
        if self.calls % self.interval == 0 or r is None or r.shape != h.shape:
            h_k = h
            for blk in dit.blocks[k:]:
                h = blk(h, mod, kv, mask)
            self._residual = h - h_k  # (B, N, D): what the deep blocks added this time
            self.full_calls += 1
        else:
            h = h + r
        self.calls += 1
        return dit.head(h, c)


def step_cache(dit, spec: str) -> StepCache:
    """A fresh StepCache for one sampling call from a `cache` setting string."""
    n, k = parse_cache(spec, len(getattr(dit, "blocks", ())) or None)
    return StepCache(dit, n, k)
