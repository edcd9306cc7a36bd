"""A small convolutional U-Net with cross-attention to the prompt (after: Ronneberger et al. 2015;
Ho et al. 2020 "DDPM" for the time-conditioned residual blocks; Rombach et al. 2022 "LDM" for the
cross-attention transformer blocks at the coarse levels).

Why a U-Net beside the DiT: at 16x16 latents and a few thousand training images, convolution's
locality is a prior the transformer has to learn from data; the question for the bake-off is
which learns a recognisable drawing in fewer CPU-minutes.

Layout for 16x16 latents with channels (c0, c1, c2): a 3x3 stem, then per level `blocks` residual
blocks (GroupNorm, SiLU, 3x3 conv; the timestep + pooled prompt embedding scales and shifts the
second norm), with an attention block (self-attention over positions, cross-attention to the
MiniLM token states, a GELU MLP) after each residual block at the levels in `attn_levels`;
stride-2 conv down, nearest-upsample + conv up, skip concatenation; a middle of resblock-attention-
resblock. Every residual branch's last layer and the output conv start at zero, so the network
starts as the zero map (the same start as the DiT's zero-initialised head).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..text.encoder import TEXT_DIM
from .dit import StepSizeEmbedder, step_size_term, timestep_embedding


@dataclass
class UNetConfig:
    latent_channels: int = 4
    latent_size: int = 16
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # per level, fine to coarse
    blocks: int = 2                 # residual blocks per level on the way down (one more up)
    attn_levels: list[int] = field(default_factory=lambda: [1, 2])  # levels with attention blocks
    heads: int = 4
    text_dim: int = TEXT_DIM
    groups: int = 32                # GroupNorm groups
    step_size_cond: bool = False    # True: forward takes the shortcut step size d (models/dit.py)

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, c), c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, e):  # x: (B, cin, H, W); e: (B, emb)
        h = self.conv1(F.silu(self.norm1(x)))  # (B, cout, H, W)
        scale, shift = self.emb(F.silu(e))[:, :, None, None].chunk(2, dim=1)  # (B, cout, 1, 1) each
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Self-attention over the H*W positions, cross-attention to the prompt states, an MLP."""

    def __init__(self, c: int, heads: int, ctx_dim: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm_in = _norm(c, groups)
        self.qkv = nn.Linear(c, 3 * c)
        self.self_out = nn.Linear(c, c)
        self.norm_x = nn.LayerNorm(c)
        self.q = nn.Linear(c, c)
        self.kv = nn.Linear(ctx_dim, 2 * c)
        self.cross_out = nn.Linear(c, c)
        self.norm_mlp = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(approximate="tanh"), nn.Linear(4 * c, c))
        for lin in (self.self_out, self.cross_out, self.mlp[-1]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _heads(self, t):  # (B, N, c) -> (B, h, N, d)
        B, N, c = t.shape
        return t.view(B, N, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x, ctx, mask):  # x: (B, c, H, W); ctx: (B, L, ctx_dim); mask: (B, L) bool
        B, c, H, W = x.shape
        h = self.norm_in(x).flatten(2).transpose(1, 2)  # (B, HW, c)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        o = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))  # (B, h, HW, d)
        s = x.flatten(2).transpose(1, 2) + self.self_out(o.transpose(1, 2).reshape(B, H * W, c))  # (B, HW, c)
        k, v = self.kv(ctx).chunk(2, dim=-1)  # (B, L, c) each
        o = F.scaled_dot_product_attention(self._heads(self.q(self.norm_x(s))), self._heads(k), self._heads(v),
                                           attn_mask=mask[:, None, None, :])
        s = s + self.cross_out(o.transpose(1, 2).reshape(B, H * W, c))
        s = s + self.mlp(self.norm_mlp(s))
        return s.transpose(1, 2).reshape(B, c, H, W)


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, g, C = list(cfg.channels), cfg.groups, cfg.latent_channels
        if cfg.latent_size % 2 ** (len(ch) - 1):
            raise ValueError(f"latent_size {cfg.latent_size} must be divisible by 2^{len(ch) - 1}")
        E = ch[-1]
        self.t_mlp = nn.Sequential(nn.Linear(256, E), nn.SiLU(), nn.Linear(E, E))
        self.pooled_mlp = nn.Sequential(nn.Linear(cfg.text_dim, E), nn.SiLU(), nn.Linear(E, E))
        self.ctx_proj = nn.Sequential(nn.Linear(cfg.text_dim, E), nn.GELU(approximate="tanh"), nn.Linear(E, E))
        self.stem = nn.Conv2d(C, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        skip_ch, c = [ch[0]], ch[0]
        for lvl, co in enumerate(ch):
            for _ in range(cfg.blocks):
                self.down.append(ResBlock(c, co, E, g))
                c = co
                if lvl in cfg.attn_levels:
                    self.down.append(AttnBlock(c, cfg.heads, E, g))
                skip_ch.append(c)
            if lvl < len(ch) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_ch.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, E, g), AttnBlock(c, cfg.heads, E, g), ResBlock(c, c, E, g)])
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(ch))):
            co = ch[lvl]
            for _ in range(cfg.blocks + 1):
                self.up.append(ResBlock(c + skip_ch.pop(), co, E, g))
                c = co
                if lvl in cfg.attn_levels:
                    self.up.append(AttnBlock(c, cfg.heads, E, g))
            if lvl > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(_norm(c, g), nn.SiLU(), nn.Conv2d(c, C, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.d_embed = StepSizeEmbedder(E) if cfg.step_size_cond else None  # last: plain init unchanged

    def _run(self, layer, h, e, ctx, mask):
        if isinstance(layer, ResBlock):
            return layer(h, e)
        if isinstance(layer, AttnBlock):
            return layer(h, ctx, mask)
        return layer(h)  # down / up sampling

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
                pooled: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, S, S) noisy latents; t: (B,) in [0, 1]; ctx: (B, L, 384); mask: (B, L) bool;
        pooled: (B, 384); d: (B,) shortcut step size (only with cfg.step_size_cond; see DiT).
        Returns the velocity, (B, C, S, S)."""
        h = self.stem(x)  # (B, c0, S, S)
        e = self.t_mlp(timestep_embedding(t, 256).to(h.dtype)) + self.pooled_mlp(pooled)  # (B, E)
        e = e + step_size_term(self.d_embed, d, h.dtype)
        kv = self.ctx_proj(ctx)  # (B, L, E)
        skips = [h]
        for layer in self.down:
            h = self._run(layer, h, e, kv, mask)
            if not isinstance(layer, AttnBlock):
                skips.append(h)
            else:
                skips[-1] = h  # an attention block refines the skip its resblock pushed
        for layer in self.mid:
            h = self._run(layer, h, e, kv, mask)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(layer, h, e, kv, mask)
        return self.out(h)  # (B, C, S, S)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
