"""KL-regularised convolutional autoencoder: 64x64x3 pixels <-> 16x16x4 latents (downsample 4).

Why a latent space at all: a DiT over 16x16 latents with patch 2 sees 64 tokens instead of 1024
pixel-patches of the same size, so it trains ~16x cheaper per image and samples fast on a CPU.
The KL term is tiny (it only keeps the latent scale tame); `latent_scale` is measured on the data
after training so the diffusion model sees latents of unit standard deviation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class AutoencoderConfig:
    in_channels: int = 3
    latent_channels: int = 4
    channels: list[int] = field(default_factory=lambda: [64, 128, 128])  # one entry per resolution
    blocks_per_level: int = 1
    kl_weight: float = 1e-6
    # "conv": a classic conv pyramid (strided convs down, upsample+conv up). "shuffle": pixel-
    # (un)shuffle by `downsample` and all the convolutions at latent resolution -- about 6x fewer
    # FLOPs per image at 64 px, which is what makes training it on a CPU practical.
    arch: str = "conv"
    shuffle_factor: int = 4
    # Multiplier that gives the training latents unit std; measured by `measure_latent_scale`.
    latent_scale: float = 1.0

    @property
    def downsample(self) -> int:
        return self.shuffle_factor if self.arch == "shuffle" else 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


AE_PRESETS = {
    "tiny": AutoencoderConfig(channels=[16, 32, 32]),
    "XS": AutoencoderConfig(channels=[32, 64, 96]),  # CPU-trainable: ~0.7 GFLOP per 64px image
    "S": AutoencoderConfig(channels=[64, 128, 128]),
    "P": AutoencoderConfig(arch="shuffle", channels=[128, 128], blocks_per_level=2),
    "M": AutoencoderConfig(channels=[96, 192, 192], blocks_per_level=2),
}


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4), c)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            cin = ch[max(i - 1, 0)]
            for b in range(cfg.blocks_per_level):
                layers.append(ResBlock(cin if b == 0 else c, c))
            if i < len(ch) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)  # (B, 2*C, H/f, W/f): mean and log-variance


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch = list(reversed(cfg.channels))
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            cin = ch[max(i - 1, 0)]
            for b in range(cfg.blocks_per_level):
                layers.append(ResBlock(cin if b == 0 else c, c))
            if i < len(ch) - 1:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        layers += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)  # (B, 3, H, W) in about [-1, 1]


class ShuffleEncoder(nn.Module):
    """(B,3,H,W) -> pixel-unshuffle -> (B,3f^2,H/f,W/f) -> convs at latent resolution."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        f, w = cfg.shuffle_factor, cfg.channels[-1]
        layers: list[nn.Module] = [nn.PixelUnshuffle(f), nn.Conv2d(cfg.in_channels * f * f, w, 3, padding=1)]
        layers += [ResBlock(w, w) for _ in range(cfg.blocks_per_level * (len(cfg.channels) - 1))]
        layers += [_norm(w), nn.SiLU(), nn.Conv2d(w, 2 * cfg.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)  # (B, 2*C, H/f, W/f)


class ShuffleDecoder(nn.Module):
    """Latents -> convs -> (B,3f^2,h,w) -> pixel-shuffle -> a small full-resolution refinement
    (residual, zero-initialised) that smooths the f x f block seams."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        f, w, c = cfg.shuffle_factor, cfg.channels[-1], cfg.in_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, w, 3, padding=1)]
        layers += [ResBlock(w, w) for _ in range(cfg.blocks_per_level * (len(cfg.channels) - 1))]
        layers += [_norm(w), nn.SiLU(), nn.Conv2d(w, c * f * f, 3, padding=1), nn.PixelShuffle(f)]
        self.net = nn.Sequential(*layers)
        self.refine = nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, c, 3, padding=1))
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def forward(self, z):
        x = self.net(z)  # (B, 3, H, W)
        return x + self.refine(x)


class AutoencoderKL(nn.Module):
    """Pixels are in [-1, 1]; `encode` returns scaled latents (unit std), `decode` takes them."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.arch not in ("conv", "shuffle"):
            raise ValueError(f"unknown autoencoder arch {cfg.arch!r}")
        self.encoder = ShuffleEncoder(cfg) if cfg.arch == "shuffle" else Encoder(cfg)
        self.decoder = ShuffleDecoder(cfg) if cfg.arch == "shuffle" else Decoder(cfg)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False):
        mean, logvar = self.moments(x)
        z = mean
        if sample:
            z = mean + torch.randn(mean.shape, generator=generator, device=mean.device) * (0.5 * logvar).exp()
        return z * self.cfg.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z / self.cfg.latent_scale)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training loss (forward is the loss so DDP wrappers see the whole computation)."""
        return self.training_loss(x, noise)

    def training_loss(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Reconstruction (L1 + MSE) of a posterior sample plus a tiny KL. `noise` is supplied by
        the caller so that the loss is a function of (weights, batch, step seed) only."""
        mean, logvar = self.moments(x)
        z = mean + noise * (0.5 * logvar).exp()
        rec = self.decoder(z)
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        loss = l1 + mse + self.cfg.kl_weight * kl
        return loss, {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach()}


def to_pixels(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) uint8 -> float in [-1, 1]."""
    return images_uint8.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> (B,3,H,W) uint8 (rounded, clamped)."""
    return x.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def psnr(a_uint8: torch.Tensor, b_uint8: torch.Tensor) -> float:
    mse = (a_uint8.float() - b_uint8.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(255.0**2 / mse)).item()


@torch.no_grad()
def measure_latent_scale(ae: AutoencoderKL, images_uint8: torch.Tensor, batch: int = 256) -> float:
    """1 / std of the unscaled latent means over the data (as SD does with its 0.18215)."""
    old = ae.cfg.latent_scale
    ae.cfg.latent_scale = 1.0
    dev = next(ae.parameters()).device
    zs = [ae.encode(to_pixels(images_uint8[i:i + batch].to(dev))).float().cpu()
          for i in range(0, len(images_uint8), batch)]
    ae.cfg.latent_scale = old
    return float(1.0 / torch.cat(zs).std().clamp(min=1e-6))
