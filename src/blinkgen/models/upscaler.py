"""A small convolutional super-resolution network: x2, residual over bicubic.

Why this shape (after: ESPCN, Shi et al. 2016, for sub-pixel upsampling; EDSR, Lim et al. 2017,
for plain residual blocks without normalisation): every convolution runs at the INPUT resolution
(64 x 64 for blinkgen's images), and one pixel shuffle turns 3 s^2 channels into the s-times larger
image, so a 64 -> 128 pass costs about as much as the same network at 64 px. The network only
predicts what bicubic interpolation misses: its last convolution starts at zero, so an untrained
network IS bicubic, and training can only move away from it where the data say so.

Pixels are in [-1, 1] (models/autoencoder.to_pixels), shapes (B, 3, H, W) -> (B, 3, sH, sW).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class UpscalerConfig:
    scale: int = 2        # output side / input side
    channels: int = 32    # feature width at the input resolution
    blocks: int = 6       # residual blocks (conv-ReLU-conv)
    res_scale: float = 0.2  # EDSR's residual scaling: keeps deep stacks of un-normalised blocks stable
    input_size: int = 64  # the input side the pipeline feeds (the network itself takes any size)

    def to_dict(self) -> dict:
        return asdict(self)


UPSCALER_PRESETS = {
    "tiny": UpscalerConfig(channels=8, blocks=1),
    "S": UpscalerConfig(channels=32, blocks=6),   # ~0.12M parameters, 0.23 MB in fp16
    "M": UpscalerConfig(channels=48, blocks=8),   # ~0.35M parameters, 0.7 MB in fp16
}


class ResBlock(nn.Module):
    def __init__(self, c: int, res_scale: float):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.c2(F.relu(self.c1(x)))


class Upscaler(nn.Module):
    def __init__(self, cfg: UpscalerConfig):
        super().__init__()
        if cfg.scale < 2 or cfg.channels < 1 or cfg.blocks < 0:
            raise ValueError(f"bad upscaler config {cfg}")
        self.cfg = cfg
        c, s = cfg.channels, cfg.scale
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(c, cfg.res_scale) for _ in range(cfg.blocks)],
                                  nn.Conv2d(c, c, 3, padding=1))
        self.tail = nn.Conv2d(c, 3 * s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s)
        nn.init.zeros_(self.tail.weight)  # an untrained network is exactly bicubic
        nn.init.zeros_(self.tail.bias)

    def bicubic(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, sH, sW) bicubic interpolation, the baseline the net corrects."""
        return F.interpolate(x, scale_factor=self.cfg.scale, mode="bicubic", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> (B, 3, sH, sW), about [-1, 1] (not clamped)."""
        h = self.head(x)  # (B, C, H, W)
        h = h + self.body(h)  # (B, C, H, W)
        return self.bicubic(x) + self.shuffle(self.tail(h))  # (B, 3, sH, sW)
