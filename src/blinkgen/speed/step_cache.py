"""Speed device: step caching for the DiT's multi-step path (after: Ma, Fang, Wang 2024,
"DeepCache: Accelerating Diffusion Models for Free", which reuses a U-Net's deep features across
adjacent steps; the same idea on a transformer's blocks is the "FirstBlockCache" of the DiT
inference engines).

Why it works: adjacent solver steps feed the network nearly the same input, and what the deep
blocks add to the token stream changes slowly along the path. `StepCache(dit, interval, shallow)`
has the denoiser's call interface; every `interval`-th call runs the whole network and remembers
the deep residual r = h_L - h_k (what the blocks after the first `shallow` ones added); the calls
in between run embed, condition, the first `shallow` blocks, add r, and the head, so they cost
about shallow/depth of a pass. It needs a split forward: the DiT's (embed -> condition ->
blocks -> head) or the U-ViT's (embed -> condition -> in blocks -> mid -> out blocks -> output),
for which it is DeepCache's own scheme (see StepCache).

One wrapper serves one sampling call: it counts calls, so the pipeline builds a fresh one per
`sample`. The schedule of full and cached calls depends only on the call count, never on the
data, and every row is computed by the same ops as in a plain pass, so an image still depends on
its own request only (tests/unit/test_step_cache.py). The setting is `cache="deep:N"` (or
"deep:N:K" for K shallow blocks); quality and speed are measured in bench/bench_blink.py.
Other networks (the U-Net) are refused with a one-line error.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserInputError

_SPEC = re.compile(r"^deep:(\d+)(?::(\d+))?$")
MAX_INTERVAL = 8


def parse_cache(spec: str, depth: int | None = None) -> tuple[int, int]:
    """"deep:N" or "deep:N:K" -> (interval N in 2..MAX_INTERVAL, shallow blocks K, default 1,
    fewer than depth when given; the network's own bound is checked by StepCache).
    UserInputError naming the accepted forms otherwise."""
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


def _kind(net) -> str:
    if all(hasattr(net, m) for m in ("embed", "condition", "blocks", "head")):
        return "dit"
    if all(hasattr(net, m) for m in ("embed", "condition", "in_blocks", "out_block", "output")):
        return "uvit"
    raise UserInputError(f"step caching needs a split forward (DiT or U-ViT); {type(net).__name__} has none")


def max_shallow(net) -> int:
    """The most shallow blocks a cache may recompute: at least one deep block must be left."""
    return len(net.blocks) - 1 if _kind(net) == "dit" else len(net.in_blocks) - 1


class StepCache:
    """The denoiser with its deep blocks cached across calls (module doc). Call it like the
    network: (x (B, C, S, S), t (B,), ctx (B, L, 384), mask (B, L), pooled (B, 384), d=None)
    -> (B, C, S, S). Attributes: calls, full_calls (passes that ran every block).

    DiT: the first `shallow` blocks run every call; the rest's residual (h_L - h_k) is reused.
    U-ViT (DeepCache's own scheme for a U-shaped net): the first `shallow` in blocks and the last
    `shallow` out blocks run every call, with their fresh skips; what reaches those out blocks
    from below (the deep in blocks, the middle, the deep out blocks) is reused."""

    def __init__(self, net, interval: int, shallow: int = 1):
        self.kind = _kind(net)
        if not 1 <= shallow <= max_shallow(net):
            raise UserInputError(f"cache shallow blocks must be between 1 and {max_shallow(net)} for this network, got {shallow}")
        self.net, self.interval, self.shallow = net, interval, shallow
        self.cfg = net.cfg
        self.calls = self.full_calls = 0
        self._cached: torch.Tensor | None = None

    def _full_now(self, h) -> bool:
        c = self._cached
        return self.calls % self.interval == 0 or c is None or c.shape != h.shape

    def __call__(self, x, t, ctx, mask, pooled, d=None) -> torch.Tensor:
        net, k = self.net, self.shallow
        h = net.embed(x)  # (B, N, D)
        c, mod, kv = net.condition(t, ctx, pooled, h.dtype, d)
        if hasattr(net, "join"):  # U-ViT's joint text mode: the text tokens join the sequence
            h, kv, mask = net.join(h, kv, mask)
        out = self._dit(h, c, mod, kv, mask) if self.kind == "dit" else self._uvit(h, c, mod, kv, mask)
        self.calls += 1
        return out

    def _dit(self, h, c, mod, kv, mask):
        net, k = self.net, self.shallow
        for blk in net.blocks[:k]:
            h = blk(h, mod, kv, mask)
        if self._full_now(h):
            h_k = h
            for blk in net.blocks[k:]:
                h = blk(h, mod, kv, mask)
            self._cached = h - h_k  # (B, N, D): what the deep blocks added this time
            self.full_calls += 1
        else:
            h = h + self._cached
        return net.head(h, c)

    def _uvit(self, h, c, mod, kv, mask):
        net, k = self.net, self.shallow
        n = len(net.out_blocks)
        skips = []
        for blk in net.in_blocks[:k]:
            h = blk(h, mod, kv, mask)
            skips.append(h)  # (B, N, D)
        if self._full_now(h):
            for blk in net.in_blocks[k:]:
                h = blk(h, mod, kv, mask)
                skips.append(h)
            if net.mid_block is not None:
                h = net.mid_block(h, mod, kv, mask)
            for i in range(n - k):
                h = net.out_block(i, h, skips.pop(), mod, kv, mask)
            self._cached = h  # (B, N, D): what reaches the last k out blocks from below
            self.full_calls += 1
        else:
            h = self._cached
        for i in range(n - k, n):
            h = net.out_block(i, h, skips.pop(), mod, kv, mask)
        return net.output(h, c)


def step_cache(net, spec: str) -> StepCache:
    """A fresh StepCache for one sampling call from a `cache` setting string."""
    n, k = parse_cache(spec)
    return StepCache(net, n, k)
