"""Text-conditioned convolutional building blocks shared by the one-pass generators: the GAN's
generator and discriminator (models/gan.py) and the text-conditional VAE (models/cvae.py).

A feature map is conditioned on the prompt two ways: a vector `w` (B, W) -- the pooled MiniLM
embedding mixed with noise or a latent -- scales and shifts every normalised feature map (FiLM,
after Perez et al. 2018; the class-conditional norms of BigGAN, Brock et al. 2019), and at chosen
resolutions the pixels cross-attend to the MiniLM token states (as StyleGAN-T, Sauer et al. 2023,
and GigaGAN, Kang et al. 2023, condition on tokens). GroupNorm normalises each sample on its own,
so no image ever depends on its batch-mates (BatchNorm would break that promise).

Widths are given per resolution, `{side: channels}`, so one table serves any image side.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..text.encoder import TEXT_DIM


def norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4), c, affine=False)


class FiLM(nn.Module):
    """w (B, W) -> per-channel (1 + scale, shift) applied to a normalised map (B, C, H, W).
    Zero-initialised, so a fresh block starts as plain normalisation."""

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(w_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(w)[:, :, None, None].chunk(2, dim=1)  # 2x (B, C, 1, 1)
        return h * (1 + scale) + shift


class CondResBlock(nn.Module):
    """GroupNorm -> FiLM(w) -> SiLU -> 3x3 conv, twice, plus a skip; optionally doubles (up) or
    halves (down) the side first. (B, cin, S, S), w (B, W) -> (B, cout, S', S')."""

    def __init__(self, cin: int, cout: int, w_dim: int, resample: str = "none"):
        super().__init__()
        if resample not in ("none", "up", "down"):
            raise ValueError(f"resample must be none, up or down, got {resample!r}")
        self.resample = resample
        self.n1, self.f1, self.c1 = norm(cin), FiLM(w_dim, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.f2, self.c2 = norm(cout), FiLM(w_dim, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self._resample(x)
        h = self.c1(F.silu(self.f1(self.n1(x), w)))
        h = self.c2(F.silu(self.f2(self.n2(h), w)))
        return (self.skip(x) + h) / math.sqrt(2.0)


class CrossAttention(nn.Module):
    """Each pixel of x (B, C, S, S) attends to the token states (B, L, 384) where mask (B, L) is
    True; residual, output projection zero-initialised. Plain softmax attention (not a fused
    kernel), so it also supports the double backward a gradient penalty would need."""

    def __init__(self, channels: int, heads: int = 4, text_dim: int = TEXT_DIM):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(text_dim, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.heads
        q = self.q(self.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
        q = q.view(B, H * W, h, C // h).transpose(1, 2)  # (B, h, HW, d)
        k, v = self.kv(states).view(B, states.shape[1], 2, h, C // h).permute(2, 0, 3, 1, 4)  # 2x (B, h, L, d)
        logits = q @ k.transpose(-1, -2) / math.sqrt(C // h)  # (B, h, HW, L)
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, H * W, C)  # (B, HW, C)
        return x + self.out(o).transpose(1, 2).reshape(B, C, H, W)


class UpStack(nn.Module):
    """From a (B, widths[lo], lo, lo) map up to side `hi`: one CondResBlock per resolution (an
    upsampling one for each doubling), cross-attention at the sides in `attn`.
    -> (B, widths[hi], hi, hi)."""

    def __init__(self, widths: dict[int, int], lo: int, hi: int, w_dim: int, attn: tuple[int, ...] = (),
                 heads: int = 4):
        super().__init__()
        sides = _sides(lo, hi)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        prev = widths[lo]
        for s in sides:
            self.blocks.append(CondResBlock(prev, widths[s], w_dim, "none" if s == lo else "up"))
            if s in attn:
                self.attn[str(s)] = CrossAttention(widths[s], heads)
            prev = widths[s]

    def forward(self, h, w, states, mask):
        for blk in self.blocks:
            h = blk(h, w)
            a = self.attn[str(h.shape[-1])] if str(h.shape[-1]) in self.attn else None
            if a is not None:
                h = a(h, states, mask)
        return h


class DownStack(nn.Module):
    """From (B, widths[hi], hi, hi) down to side `lo`: a downsampling CondResBlock per halving,
    cross-attention at the sides in `attn` (after the block that reaches that side).
    -> (B, widths[lo], lo, lo)."""

    def __init__(self, widths: dict[int, int], hi: int, lo: int, w_dim: int, attn: tuple[int, ...] = (),
                 heads: int = 4):
        super().__init__()
        sides = _sides(lo, hi)[::-1]  # hi, ..., lo
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        for prev, s in zip(sides, sides[1:]):
            self.blocks.append(CondResBlock(widths[prev], widths[s], w_dim, "down"))
            if s in attn:
                self.attn[str(s)] = CrossAttention(widths[s], heads)

    def forward(self, h, w, states, mask):
        for blk in self.blocks:
            h = blk(h, w)
            a = self.attn[str(h.shape[-1])] if str(h.shape[-1]) in self.attn else None
            if a is not None:
                h = a(h, states, mask)
        return h


def _sides(lo: int, hi: int) -> list[int]:
    """[lo, 2 lo, ..., hi]; ValueError unless hi = lo * 2^k."""
    out = [lo]
    while out[-1] < hi:
        out.append(out[-1] * 2)
    if out[-1] != hi:
        raise ValueError(f"side {hi} is not {lo} times a power of two")
    return out


def widths_for(table: dict, sides) -> dict[int, int]:
    """A preset's {side: width} table (JSON keys may be strings) restricted to `sides`, with a
    clear error for a side it lacks."""
    t = {int(k): int(v) for k, v in table.items()}
    missing = [s for s in sides if s not in t]
    if missing:
        raise ValueError(f"no width for side(s) {missing}; the table covers {sorted(t)}")
    return {s: t[s] for s in sides}
