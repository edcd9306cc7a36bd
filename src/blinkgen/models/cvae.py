"""The text-conditional VAE: a conditional VAE whose prior is a learned network of the prompt.

Not to be confused with `AutoencoderKL` (models/autoencoder.py), the latent autoencoder the
diffusion family uses as a component. This one is a generator: sampling draws z from the prompt's
own prior and decodes it.

    prior     p(z | t)    = N(mu_p(t), sigma_p(t)^2)   a learned grid cross-attends to the MiniLM
                                                       token states, FiLM by the pooled embedding
    encoder   q(z | x, t) = N(mu_q, sigma_q^2)         down-sampling residual blocks, FiLM by t
    decoder   p(x | z, t) = N(x_hat(z, t), sigma^2)    up-sampling residual blocks, FiLM by t,
                                                       cross-attention to the tokens; sigma is one
                                                       learned scalar (a calibrated decoder)

z is a (z_channels, z_size, z_size) grid; all Gaussians are diagonal. The loss is the negative
ELBO per data dimension: E_q[-log p(x|z,t)] + kl_weight * KL(q(z|x,t) || p(z|t)), the KL in
closed form. Learning sigma instead of fixing a reconstruction weight is Rybkin et al. 2021,
"Simple and Effective VAE Training with Calibrated Decoders" (sigma-VAE); the conditional VAE with
a prior network of the condition is Sohn et al. 2015, "Learning Structured Output Representation
using Deep Conditional Generative Models". Sampling: z = mu_p + temperature * sigma_p * eps, then
x = x_hat(z, t) (the decoder's mean; no pixel noise is added).

The data x is pixels in [-1, 1] or AutoencoderKL latents, whichever space the model works in
(families/onepass.py).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from .blocks import TEXT_DIM, CondResBlock, CrossAttention, DownStack, UpStack, norm, widths_for

LOG_SIGMA_MIN = -6.0  # the decoder's learned log sigma is clamped here (sigma ~ 0.0025 of [-1, 1])


@dataclass
class CVAEConfig:
    in_channels: int = 3  # 3: pixels; 4: AutoencoderKL latents
    in_size: int = 64
    z_channels: int = 8
    z_size: int = 8
    w_dim: int = 256
    widths: dict = field(default_factory=lambda: {4: 256, 8: 192, 16: 128, 32: 64, 64: 32})
    attn: tuple = (8,)  # sides with cross-attention (encoder, decoder); the prior always has it
    heads: int = 4

    def sides(self) -> list[int]:
        out = [self.z_size]
        while out[-1] < self.in_size:
            out.append(out[-1] * 2)
        if out[-1] != self.in_size:
            raise ValueError(f"in_size {self.in_size} must be z_size {self.z_size} times a power of two")
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = {str(k): v for k, v in widths_for(self.widths, self.sides()).items()}
        d["attn"] = list(self.attn)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CVAEConfig":
        d = dict(d)
        d["widths"] = {int(k): int(v) for k, v in d["widths"].items()}
        d["attn"] = tuple(d.get("attn", ()))
        return cls(**d)


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) per element, same shapes in and out."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0)


class TextConditionalVAE(nn.Module):
    """See the module doc. Text inputs everywhere: states (B, L, 384) float, mask (B, L) bool,
    pooled (B, 384) float."""

    def __init__(self, cfg: CVAEConfig):
        super().__init__()
        self.cfg = cfg
        sides = cfg.sides()
        widths = widths_for(cfg.widths, sides)
        W, zs, zc = cfg.w_dim, cfg.z_size, cfg.z_channels
        self.text = nn.Sequential(nn.Linear(TEXT_DIM, W), nn.SiLU(), nn.Linear(W, W))  # pooled -> w
        # encoder q(z | x, t)
        self.enc_stem = nn.Conv2d(cfg.in_channels, widths[cfg.in_size], 3, padding=1)
        self.enc = DownStack(widths, cfg.in_size, zs, W, tuple(cfg.attn), cfg.heads)
        self.enc_head = nn.Sequential(norm(widths[zs]), nn.SiLU(), nn.Conv2d(widths[zs], 2 * zc, 3, padding=1))
        # prior p(z | t)
        self.prior_grid = nn.Parameter(torch.randn(1, widths[zs], zs, zs) * 0.02)
        self.prior_blocks = nn.ModuleList([CondResBlock(widths[zs], widths[zs], W),
                                           CondResBlock(widths[zs], widths[zs], W)])
        self.prior_attn = CrossAttention(widths[zs], cfg.heads)
        self.prior_head = nn.Sequential(norm(widths[zs]), nn.SiLU(), nn.Conv2d(widths[zs], 2 * zc, 3, padding=1))
        # decoder p(x | z, t)
        self.dec_stem = nn.Conv2d(zc, widths[zs], 3, padding=1)
        self.dec = UpStack(widths, zs, cfg.in_size, W, tuple(cfg.attn), cfg.heads)
        self.dec_head = nn.Sequential(norm(widths[cfg.in_size]), nn.SiLU(),
                                      nn.Conv2d(widths[cfg.in_size], cfg.in_channels, 3, padding=1))
        self.log_sigma = nn.Parameter(torch.zeros(()))  # the decoder's learned noise scale, log

    @property
    def z_shape(self) -> tuple[int, int, int]:
        return (self.cfg.z_channels, self.cfg.z_size, self.cfg.z_size)

    def prior(self, states, mask, pooled, w=None) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z | t) -> (mu, logvar), each (B, z_channels, z_size, z_size)."""
        w = self.text(pooled) if w is None else w  # (B, W)
        h = self.prior_grid.expand(len(pooled), -1, -1, -1)
        h = self.prior_blocks[0](h, w)
        h = self.prior_attn(h, states, mask)
        h = self.prior_blocks[1](h, w)
        mu, logvar = self.prior_head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)

    def posterior(self, x, states, mask, pooled, w=None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, t) -> (mu, logvar), each (B, z_channels, z_size, z_size). x (B, C, S, S)."""
        w = self.text(pooled) if w is None else w
        h = self.enc(self.enc_stem(x), w, states, mask)
        mu, logvar = self.enc_head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z, states, mask, pooled, w=None) -> torch.Tensor:
        """The decoder's mean x_hat (B, in_channels, in_size, in_size) for z (B, zc, zs, zs)."""
        w = self.text(pooled) if w is None else w
        return self.dec_head(self.dec(self.dec_stem(z), w, states, mask))

    def sample(self, eps, states, mask, pooled, temperature: float = 1.0) -> torch.Tensor:
        """x_hat for z = mu_p + temperature * sigma_p * eps; eps (B, zc, zs, zs) standard normal."""
        w = self.text(pooled)
        mu, logvar = self.prior(states, mask, pooled, w)
        return self.decode(mu + temperature * (0.5 * logvar).exp() * eps, states, mask, pooled, w)

    def forward(self, x, eps, states, mask, pooled, kl_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """The training loss, -ELBO per data dimension (nats), with the reparameterised posterior
        sample z = mu_q + sigma_q * eps (eps supplied by the caller, so the loss is a function of
        weights, batch and step seed). Returns (loss, logs: rec_nll, kl, mse, sigma)."""
        w = self.text(pooled)
        mu_q, lv_q = self.posterior(x, states, mask, pooled, w)
        mu_p, lv_p = self.prior(states, mask, pooled, w)
        z = mu_q + (0.5 * lv_q).exp() * eps
        x_hat = self.decode(z, states, mask, pooled, w).float()
        log_sigma = self.log_sigma.float().clamp(min=LOG_SIGMA_MIN)
        err = (x.float() - x_hat).pow(2)
        nll = 0.5 * err * torch.exp(-2 * log_sigma) + log_sigma + 0.5 * math.log(2 * math.pi)  # per value
        dims = x[0].numel()
        kl = gaussian_kl(mu_q.float(), lv_q.float(), mu_p.float(), lv_p.float()).flatten(1).sum(1)  # (B,) nats
        rec = nll.flatten(1).mean(1)  # (B,) nats per data dimension
        loss = (rec + kl_weight * kl / dims).mean()
        return loss, {"rec_nll": rec.mean().detach(), "kl": kl.mean().detach(), "mse": err.mean().detach(),
                      "sigma": log_sigma.exp().detach()}
