"""A text-conditioned Diffusion Transformer over autoencoder latents (after: Peebles & Xie, DiT;
PixArt-alpha for adaLN-single and cross-attention).

Conditioning: the timestep and the pooled MiniLM embedding drive adaptive LayerNorm through ONE
shared modulation MLP plus a small learned per-block offset (adaLN-single) -- it saves ~30% of the
parameters of per-block adaLN, which matters for a shipped model capped at 40 MB; the per-token
MiniLM states enter through cross-attention in every block (masked by the padding mask).
The network predicts the flow-matching velocity; samplers and guidance live outside it.

Optional step-size input (`step_size_cond`, the shortcut model of Frans et al. 2024, "One Step
Diffusion via Shortcut Models"): an embedding of the step size d in [0, 1] is added to the
conditioning vector, so the network can predict the average velocity over a jump of size d. Its
last layer starts at zero, so a plain model's weights load unchanged and the output is exactly the
plain model's until distillation trains it (families/diffusion/distill.py).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..text.encoder import TEXT_DIM


@dataclass
class DiTConfig:
    latent_channels: int = 4
    latent_size: int = 16
    patch: int = 2
    hidden: int = 384
    depth: int = 8
    heads: int = 6
    mlp_ratio: float = 4.0
    text_dim: int = TEXT_DIM
    step_size_cond: bool = False  # True: forward takes the shortcut step size d (see the module doc)

    @property
    def tokens(self) -> int:
        return (self.latent_size // self.patch) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes (DiT-style registry); the CLI takes these names.
DIT_PRESETS: dict[str, dict] = {
    "tiny": dict(hidden=64, depth=2, heads=2),
    "S": dict(hidden=256, depth=6, heads=4),
    "M": dict(hidden=320, depth=8, heads=5),  # the embedded default: ~15M params, 29 MB in fp16
    "B": dict(hidden=384, depth=8, heads=6),
    "L": dict(hidden=512, depth=10, heads=8),
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 so frequencies match DDPM practice)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


def sincos_2d(hidden: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, (grid*grid, hidden)."""
    q = hidden // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float32) / q)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
    out = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(out, dim=1)


class StepSizeEmbedder(nn.Module):
    """The shortcut step size d (B,) in [0, 1] -> (B, dim), added to the conditioning vector:
    sinusoidal features (as for t) then a 2-layer MLP whose last layer starts at zero, so a fresh
    embedder adds exactly 0 for every d and a plain model's behaviour is kept until training moves
    it. d = 0 asks for the instantaneous velocity (the plain flow model's output)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.xavier_uniform_(self.mlp[0].weight)
        nn.init.zeros_(self.mlp[0].bias)
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, d: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_embedding(d, self.freq_dim).to(dtype))  # (B, dim)


def step_size_term(embedder: "StepSizeEmbedder | None", d: torch.Tensor | None, dtype: torch.dtype):
    """What a denoiser adds to its conditioning vector for step size d: embedder(d), or 0 when
    d is None (a plain call). A network without a step-size input refuses a d (ValueError)."""
    if d is None:
        return 0
    if embedder is None:
        raise ValueError("this denoiser has no step-size input (config step_size_cond is false)")
    return embedder(d, dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        B, N, D = x.shape
        ctx = x if ctx is None else ctx
        q = self.q(x).view(B, N, self.heads, -1).transpose(1, 2)  # (B, h, N, d)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # 2x (B, h, L, d)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L) bool, True = attend
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, d)
        return self.out(o.transpose(1, 2).reshape(B, N, D))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D = cfg.hidden
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, cfg.heads)
        # text_mode "joint" (U-ViT's in-context text tokens): the text rides in x itself, so
        # self-attention (masked by `mask`) does the conditioning and there is no cross-attention
        self.joint = getattr(cfg, "text_mode", "cross") == "joint"
        self.norm2 = None if self.joint else nn.LayerNorm(D, eps=1e-6)
        self.cross = None if self.joint else Attention(D, cfg.heads, kv_dim=D)
        self.norm3 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hid = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hid), nn.GELU(approximate="tanh"), nn.Linear(hid, D))
        self.mod_offset = nn.Parameter(torch.randn(6, D) / D**0.5)  # adaLN-single per-block table

    def forward(self, x, mod, ctx, mask):
        # mod: (B, 6, D) shared modulation; this block adds its own learned offset. Cross mode:
        # x (B, N, D) image tokens, ctx (B, L, D) text, mask (B, L). Joint mode: x (B, N + L, D)
        # image then text tokens, ctx unused, mask (B, N + L) over keys.
        sh1, sc1, g1, sh2, sc2, g2 = (mod + self.mod_offset).unbind(1)  # each (B, D)
        h = self.norm1(x) * (1 + sc1[:, None]) + sh1[:, None]
        x = x + g1[:, None] * (self.attn(h, None, mask) if self.joint else self.attn(h))
        if not self.joint:
            x = x + self.cross(self.norm2(x), ctx, mask)
        x = x + g2[:, None] * self.mlp(self.norm3(x) * (1 + sc2[:, None]) + sh2[:, None])
        return x  # (B, N, D)


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        D, p, C = cfg.hidden, cfg.patch, cfg.latent_channels
        self.patchify = nn.Conv2d(C, D, kernel_size=p, stride=p)
        self.register_buffer("pos", sincos_2d(D, cfg.latent_size // p)[None], persistent=False)
        self.t_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.pooled_mlp = nn.Sequential(nn.Linear(cfg.text_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.ctx_proj = nn.Sequential(nn.Linear(cfg.text_dim, D), nn.GELU(approximate="tanh"), nn.Linear(D, D))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Linear(D, 2 * D)
        self.final = nn.Linear(D, p * p * C)
        self._init()
        # built last and initialised by itself, so a plain model's init (and RNG use) is unchanged
        self.d_embed = StepSizeEmbedder(D) if cfg.step_size_cond else None

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init every residual gate and the output: the network starts as the identity map.
        nn.init.zeros_(self.mod[-1].weight)
        nn.init.zeros_(self.mod[-1].bias)
        for b in self.blocks:
            nn.init.zeros_(b.cross.out.weight)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    # forward = embed -> condition -> blocks -> head, each its own method, so that a speed device
    # (step caching: reuse deep-block outputs across adjacent solver steps) can wrap the blocks.
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Noisy latents x (B, C, S, S) -> patch tokens with positions, h (B, N, D), N = (S/p)^2."""
        return self.patchify(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)

    def condition(self, t: torch.Tensor, ctx: torch.Tensor, pooled: torch.Tensor,
                  dtype: torch.dtype, d: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """t (B,) in [0, 1], ctx (B, L, 384) token states, pooled (B, 384), d (B,) shortcut step
        size or None -> c (B, D), the conditioning vector the head reads; mod (B, 6, D), the
        shared adaLN-single modulation every block offsets; kv (B, L, D), the projected text the
        blocks cross-attend to. dtype: the dtype of the patch tokens (the timestep embedding is
        computed in fp32)."""
        B = t.shape[0]
        c = self.t_mlp(timestep_embedding(t, 256).to(dtype)) + self.pooled_mlp(pooled)  # (B, D)
        c = c + step_size_term(self.d_embed, d, dtype)
        mod = self.mod(c).view(B, 6, -1)  # (B, 6, D)
        kv = self.ctx_proj(ctx)  # (B, L, D)
        return c, mod, kv

    def head(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Final modulated norm and un-patchify: h (B, N, D), c (B, D) -> velocity (B, C, S, S)."""
        B, N, _ = h.shape
        p, C = self.cfg.patch, self.cfg.latent_channels
        g = math.isqrt(N)
        shift, scale = self.final_mod(F.silu(c)).chunk(2, dim=-1)  # (B, D) each
        h = self.final_norm(h) * (1 + scale[:, None]) + shift[:, None]
        h = self.final(h)  # (B, N, p*p*C)
        h = h.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, g, p, g, p)
        return h.reshape(B, C, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
                pooled: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, S, S) noisy latents; t: (B,) in [0, 1]; ctx: (B, L, 384); mask: (B, L) bool;
        pooled: (B, 384); d: (B,) shortcut step size in [0, 1] (only with cfg.step_size_cond;
        None = a plain call). Returns the velocity (with d: the average velocity over a step of
        size d), (B, C, S, S)."""
        h = self.embed(x)  # (B, N, D)
        c, mod, kv = self.condition(t, ctx, pooled, h.dtype, d)
        for blk in self.blocks:
            h = blk(h, mod, kv, mask)  # (B, N, D)
        return self.head(h, c)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_forward(self, text_len: int = 16) -> int:
        """Matmul FLOPs of one forward for one image (2 per multiply-add), for MFU."""
        cfg, N, D = self.cfg, self.cfg.tokens, self.cfg.hidden
        per_block = 2 * N * (4 * D * D) + 2 * 2 * N * N * D  # self-attn projections + scores/values
        per_block += 2 * (N * 2 * D * D + text_len * 2 * D * D) + 2 * 2 * N * text_len * D  # cross-attn
        per_block += 2 * N * 2 * D * int(D * cfg.mlp_ratio)  # MLP
        return cfg.depth * per_block + 2 * N * D * cfg.patch ** 2 * cfg.latent_channels * 2
