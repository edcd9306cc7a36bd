"""FSQ image tokenizer: 64x64 RGB <-> a grid of discrete tokens (8x8 = 64 or 16x16 = 256).

Why a tokenizer: the autoregressive family is a language model over image tokens, so pixels must
become a short sequence of integers and back. A conv encoder maps the image to a (d, h, w) grid, FSQ
rounds each of the d channels onto a few levels (codebook = prod(levels)), and a conv decoder maps
codes back to pixels. Tokens are read in raster order (row by row), as LlamaGen does.

The conv blocks are the autoencoder's (models/autoencoder.py), so both families share one design.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .autoencoder import ResBlock, _norm, to_pixels
from .fsq import FSQ


@dataclass
class TokenizerConfig:
    image_size: int = 64
    # One entry per resolution; the grid is image_size / 2**(len(channels) - 1) on a side.
    channels: list[int] = field(default_factory=lambda: [64, 128, 128, 128])
    # FSQ paper's recommended levels for a ~1k codebook: 8*5*5*5 = 1000 codes.
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TokenizerConfig":
        return TokenizerConfig(**d)


# Named sizes (the same names as the autoencoder's presets, so one --ae-preset flag serves both
# families). Downsample 8 -> an 8x8 grid = 64 tokens at 64px (fast AR decoding); "-f4" -> 16x16 =
# 256 tokens (more detail, 4x the decode steps).
TOKENIZER_PRESETS: dict[str, TokenizerConfig] = {
    "tiny": TokenizerConfig(channels=[16, 32, 32, 32], levels=[5, 5, 5]),
    # CPU-trainable (~4x tiny's FLOPs) with the 1000-code book: 640 bits per image instead of 448
    "XS": TokenizerConfig(channels=[32, 64, 64, 64], levels=[8, 5, 5, 5]),
    "S": TokenizerConfig(channels=[64, 128, 128, 128]),
    "M": TokenizerConfig(channels=[96, 192, 192, 192], levels=[8, 8, 8, 5, 5, 5]),
    "tiny-f4": TokenizerConfig(channels=[16, 32, 32], levels=[5, 5, 5]),
    "S-f4": TokenizerConfig(channels=[64, 128, 128]),
}


def _conv_stack(cin: int, chans: list[int], down: bool) -> list[nn.Module]:
    """ResBlock per level, with a stride-2 conv (down) or nearest-upsample + conv (up) between."""
    layers: list[nn.Module] = []
    for i, c in enumerate(chans):
        layers.append(ResBlock(cin if i == 0 else chans[i - 1], c))
        if i < len(chans) - 1:
            if down:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            else:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
    return layers


class FSQTokenizer(nn.Module):
    """Images in [-1, 1] <-> token indices (B, h*w) in [0, codebook_size)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        if cfg.image_size % cfg.downsample:
            raise ValueError(f"image_size {cfg.image_size} is not divisible by {cfg.downsample}")
        self.cfg = cfg
        ch, d = cfg.channels, len(cfg.levels)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, ch[0], 3, padding=1), *_conv_stack(ch[0], ch, down=True),
            _norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], d, 1))
        rch = list(reversed(ch))
        self.decoder = nn.Sequential(
            nn.Conv2d(d, rch[0], 3, padding=1), *_conv_stack(rch[0], rch, down=False),
            _norm(rch[-1]), nn.SiLU(), nn.Conv2d(rch[-1], 3, 3, padding=1))
        self.fsq = FSQ(cfg.levels)

    @property
    def n_tokens(self) -> int:
        return self.cfg.n_tokens

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def _check_images(self, x: torch.Tensor) -> None:
        s = self.cfg.image_size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"tokenizer expects (B, 3, {s}, {s}) images, got {tuple(x.shape)}")

    def quantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,3,H,W) in [-1,1] -> codes (B, d, h, w) with straight-through grads, indices (B, h*w)."""
        self._check_images(x)
        z = self.encoder(x).permute(0, 2, 3, 1)  # (B, h, w, d)
        codes, idx = self.fsq(z)  # (B, h, w, d), (B, h, w)
        return codes.permute(0, 3, 1, 2), idx.flatten(1)  # (B, d, h, w), (B, h*w)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,H,W) float in [-1, 1] -> indices (B, h*w) long, raster order."""
        return self.quantized(x)[1]

    @torch.no_grad()
    def encode_uint8(self, images_uint8: torch.Tensor) -> torch.Tensor:
        p = next(self.parameters())
        return self.encode(to_pixels(images_uint8.to(p.device)).to(p.dtype))  # (B, h*w)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(codes)  # (B, 3, H, W) in about [-1, 1]

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h*w) -> images (B, 3, H, W) float in about [-1, 1]."""
        B, n = indices.shape
        if n != self.n_tokens:
            raise ValueError(f"expected {self.n_tokens} tokens per image, got {n}")
        g = self.cfg.grid
        codes = self.fsq.indices_to_codes(indices).view(B, g, g, -1)  # (B, g, g, d)
        p = next(self.parameters())
        return self.decoder(codes.permute(0, 3, 1, 2).to(p.dtype))  # (B, 3, H, W)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) with straight-through gradients. x (B,3,H,W) in [-1,1]."""
        return self.decode_codes(self.quantized(x)[0])  # (B, 3, H, W)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training loss (forward is the loss so DDP wrappers see the whole computation)."""
        return self.training_loss(x)

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Reconstruction L1 + MSE through the straight-through round; FSQ needs no other term."""
        rec = self.reconstruct(x)
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        return l1 + mse, {"l1": l1.detach(), "mse": mse.detach()}

    @torch.no_grad()
    def codebook_usage(self, indices: torch.Tensor) -> float:
        """Fraction of the codebook used by `indices` — the health number for a tokenizer."""
        return torch.unique(indices).numel() / self.codebook_size
