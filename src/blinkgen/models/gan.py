"""The text-conditional GAN's two networks: a one-pass generator and a projection discriminator.

Generator (noise + prompt -> image in ONE pass): a mapping MLP mixes the noise z with the pooled
MiniLM embedding into a style vector w; a learned linear map of w makes a 4x4 map; up-sampling
residual blocks modulated by w (FiLM) grow it to the output side, with cross-attention to the
MiniLM token states at the sides in `attn` (text conditioning after StyleGAN-T, Sauer et al. 2023,
and GigaGAN, Kang et al. 2023). The output is pixels in [-1, 1] (3 channels) or AutoencoderKL
latents (4 channels, unit std), whichever space the model works in (families/onepass.py).

Discriminator: residual down-sampling blocks without normalisation (as R3GAN, Huang et al. 2024,
uses none), a feature vector phi(x), and the projection head of Miyato & Koyama 2018, "cGANs with
Projection Discriminator": D(x, t) = <phi(x), e(t)> + b(phi(x)), e(t) a learned map of the pooled
prompt embedding. Plain ops only (no fused attention), so the R1/R2 penalties can take the double
backward.

Sizes are named presets (GAN_PRESETS; the family's presets in families/gan/folder.py add the
space and the objective's constants); widths are per side, so one preset serves any image side.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import TEXT_DIM, UpStack, norm, widths_for


@dataclass
class GeneratorConfig:
    out_channels: int = 3  # 3: pixels; 4: AutoencoderKL latents
    out_size: int = 64  # side of the output (pixels, or latents = image side / downsample)
    z_dim: int = 128
    w_dim: int = 256
    widths: dict = field(default_factory=lambda: {4: 256, 8: 192, 16: 128, 32: 64, 64: 32})
    attn: tuple = (8, 16)  # sides with cross-attention to the token states
    heads: int = 4

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = {str(k): v for k, v in widths_for(self.widths, _sides_to(self.out_size)).items()}
        d["attn"] = list(self.attn)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        d = dict(d)
        d["widths"] = {int(k): int(v) for k, v in d["widths"].items()}
        d["attn"] = tuple(d.get("attn", ()))
        return cls(**d)


@dataclass
class DiscriminatorConfig:
    in_channels: int = 3
    in_size: int = 64
    widths: dict = field(default_factory=lambda: {4: 256, 8: 192, 16: 128, 32: 64, 64: 32})
    feat_dim: int = 256

    @classmethod
    def from_dict(cls, d: dict) -> "DiscriminatorConfig":
        d = dict(d)
        d["widths"] = {int(k): int(v) for k, v in d["widths"].items()}
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = {str(k): v for k, v in widths_for(self.widths, _sides_to(self.in_size)).items()}
        return d


def _sides_to(side: int) -> list[int]:
    out = [4]
    while out[-1] < side:
        out.append(out[-1] * 2)
    if out[-1] != side:
        raise ValueError(f"side {side} must be 4 times a power of two")
    return out


class Generator(nn.Module):
    """z (B, z_dim), states (B, L, 384), mask (B, L) bool, pooled (B, 384)
    -> (B, out_channels, out_size, out_size), float, unbounded (pixels are clamped to [-1, 1] when
    written). One network pass; every row depends on its own inputs only."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        sides = _sides_to(cfg.out_size)
        widths = widths_for(cfg.widths, sides)
        W = cfg.w_dim
        self.text_proj = nn.Linear(TEXT_DIM, W)
        self.mapping = nn.Sequential(nn.Linear(cfg.z_dim + W, W), nn.SiLU(), nn.Linear(W, W), nn.SiLU(),
                                     nn.Linear(W, W))
        self.input = nn.Linear(W, widths[4] * 16)
        self.up = UpStack(widths, 4, cfg.out_size, W, tuple(cfg.attn), cfg.heads)
        c = widths[cfg.out_size]
        self.head = nn.Sequential(norm(c), nn.SiLU(), nn.Conv2d(c, cfg.out_channels, 3, padding=1))

    def style(self, z: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """w (B, w_dim) from noise and the pooled prompt embedding."""
        return self.mapping(torch.cat([z, self.text_proj(pooled)], dim=1))

    def forward(self, z, states, mask, pooled):
        w = self.style(z, pooled)  # (B, W)
        h = self.input(w).view(len(z), -1, 4, 4)  # (B, C4, 4, 4)
        h = self.up(h, w, states, mask)  # (B, C, S, S)
        return self.head(h)  # (B, out_channels, S, S)


class DBlock(nn.Module):
    """LeakyReLU -> conv -> LeakyReLU -> conv -> 2x average pool, plus a pooled 1x1 skip.
    (B, cin, S, S) -> (B, cout, S/2, S/2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, cin, 3, padding=1), nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        h = self.c2(F.leaky_relu(self.c1(F.leaky_relu(x, 0.2)), 0.2))
        return (F.avg_pool2d(self.skip(x), 2) + F.avg_pool2d(h, 2)) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """x (B, in_channels, in_size, in_size), pooled (B, 384) -> logits (B,) float.
    phi: stem conv, DBlocks down to 4x4, conv, linear to feat_dim; projection head on the prompt."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        sides = _sides_to(cfg.in_size)[::-1]  # in_size, ..., 4
        widths = widths_for(cfg.widths, sides)
        self.stem = nn.Conv2d(cfg.in_channels, widths[cfg.in_size], 3, padding=1)
        self.blocks = nn.Sequential(*[DBlock(widths[a], widths[b]) for a, b in zip(sides, sides[1:])])
        c = widths[4]
        self.final = nn.Conv2d(c, c, 3, padding=1)
        self.feat = nn.Linear(c * 16, cfg.feat_dim)
        self.out = nn.Linear(cfg.feat_dim, 1)
        self.embed = nn.Linear(TEXT_DIM, cfg.feat_dim)  # e(t): the projection's text embedding

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))  # (B, C4, 4, 4)
        h = F.leaky_relu(self.final(F.leaky_relu(h, 0.2)), 0.2)
        return F.leaky_relu(self.feat(h.flatten(1)), 0.2)  # (B, F)

    def forward(self, x, pooled):
        phi = self.features(x)  # (B, F)
        return (self.out(phi).squeeze(1) + (phi * self.embed(pooled)).sum(1)).float()  # (B,)
