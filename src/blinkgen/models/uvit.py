"""The DiT with U-ViT long skips and a convolutional stem and head (after: Bao et al. 2023, "All
are Worth Words: A ViT Backbone for Diffusion Models"; the conv stem/head as in their latent
models and in Hourglass/HDiT practice).

Why these three changes for small data on a CPU: a long skip hands the first blocks' features
straight to the last ones, so fine detail of the input survives a shallow, narrow stack; a 3x3
conv stem sees across patch borders before patchify (a 2x2 patch alone cannot tell an edge from
a flat field); a 3x3 conv after unpatchify removes the patch-grid seams a linear head leaves.
All three are cheap: the skips add one (2D -> D) linear per decoder block, the convs ~1% FLOPs.

Same interface and conditioning as `DiT` (cross-attention to MiniLM token states, adaLN-single
from the timestep and the pooled prompt), so samplers, guidance and the pipeline do not change.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dit import DiTBlock, DiTConfig, StepSizeEmbedder, sincos_2d, step_size_term, timestep_embedding


MAX_TEXT_TOKENS = 32  # the text encoder's DEFAULT_MAX_TOKENS: joint mode's learned text positions


@dataclass
class UViTConfig(DiTConfig):
    stem_channels: int = 64  # width of the 3x3 conv stem before patchify
    # "cross": the text enters by cross-attention in every block (as DiT). "joint": U-ViT's own
    # design (Bao et al. 2023) -- the projected text tokens join the image tokens in one sequence,
    # so every block's self-attention and MLP also update the text (binding words to places is
    # learnt inside the network, as in SD3's joint attention); costs (N + L) / N tokens per block.
    text_mode: str = "cross"


class UViT(nn.Module):
    def __init__(self, cfg: UViTConfig):
        super().__init__()
        if cfg.depth < 2:
            raise ValueError(f"U-ViT needs depth >= 2 (an encoder and a decoder half), got {cfg.depth}")
        if cfg.text_mode not in ("cross", "joint"):
            raise ValueError(f"text_mode must be 'cross' or 'joint', got {cfg.text_mode!r}")
        self.cfg = cfg
        D, p, C, Cs = cfg.hidden, cfg.patch, cfg.latent_channels, cfg.stem_channels
        self.stem = nn.Sequential(nn.Conv2d(C, Cs, 3, padding=1), nn.SiLU())
        self.patchify = nn.Conv2d(Cs, D, kernel_size=p, stride=p)
        self.register_buffer("pos", sincos_2d(D, cfg.latent_size // p)[None], persistent=False)
        self.t_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.pooled_mlp = nn.Sequential(nn.Linear(cfg.text_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.ctx_proj = nn.Sequential(nn.Linear(cfg.text_dim, D), nn.GELU(approximate="tanh"), nn.Linear(D, D))
        n_in = cfg.depth // 2
        self.in_blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(n_in))
        self.mid_block = DiTBlock(cfg) if cfg.depth % 2 else None
        self.out_blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(n_in))
        self.skips = nn.ModuleList(nn.Linear(2 * D, D) for _ in range(n_in))  # [h, skip] -> D
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Linear(D, 2 * D)
        self.final = nn.Linear(D, p * p * C)
        self.head = nn.Conv2d(C, C, 3, padding=1)  # residual 3x3 after unpatchify
        self._init()
        # joint mode: where each text token sits in the prompt, learnt (built after _init so a
        # cross-mode model's init and RNG use are unchanged)
        self.text_pos = (nn.Parameter(torch.randn(MAX_TEXT_TOKENS, D) * 0.02) if cfg.text_mode == "joint"
                         else None)
        self.d_embed = StepSizeEmbedder(D) if cfg.step_size_cond else None  # as in DiT: last, own init

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.mod[-1].weight)
        nn.init.zeros_(self.mod[-1].bias)
        for b in [*self.in_blocks, *self.out_blocks] + ([self.mid_block] if self.mid_block else []):
            if b.cross is not None:
                nn.init.zeros_(b.cross.out.weight)
        for s in self.skips:  # start as "ignore the skip": the first half passes through unchanged
            nn.init.zeros_(s.weight)
            with torch.no_grad():
                s.weight[:, : self.cfg.hidden].copy_(torch.eye(self.cfg.hidden))
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # forward = embed -> condition -> in blocks (each leaves a skip) -> mid -> out blocks (each
    # merges the newest skip) -> output, each its own method, so step caching (speed/step_cache.py,
    # DeepCache-style: reuse what reaches the last out block from below) can run the outer blocks
    # alone. Bit-identical to the former single forward.
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) -> patch tokens with positions, h (B, N, D)."""
        return self.patchify(self.stem(x)).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)

    def condition(self, t: torch.Tensor, ctx: torch.Tensor, pooled: torch.Tensor, dtype: torch.dtype,
                  d: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> c (B, D) conditioning vector, mod (B, 6, D) shared modulation, kv (B, L, D) text (as DiT)."""
        B = t.shape[0]
        c = self.t_mlp(timestep_embedding(t, 256).to(dtype)) + self.pooled_mlp(pooled)  # (B, D)
        c = c + step_size_term(self.d_embed, d, dtype)
        return c, self.mod(c).view(B, 6, -1), self.ctx_proj(ctx)  # (B, D), (B, 6, D), (B, L, D)

    def join(self, h: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor):
        """What the blocks take: cross mode -> (h, kv, mask) unchanged; joint mode -> h (B, N + L, D)
        = image tokens then the text tokens (kv + their learned positions), kv None, mask
        (B, N + L) bool over keys (image tokens always True). ValueError if L > MAX_TEXT_TOKENS."""
        if self.text_pos is None:
            return h, kv, mask
        if self.training and mask.shape[1] > 1:  # drop the batch's all-padding tail: the same sums,
            keep = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1  # fewer tokens to train
            kv, mask = kv[:, :keep], mask[:, :keep]  # (generation keeps its fixed length: bit-stable)
        B, N, _ = h.shape
        L = kv.shape[1]
        if L > MAX_TEXT_TOKENS:
            raise ValueError(f"joint text mode takes at most {MAX_TEXT_TOKENS} text tokens, got {L}")
        seq = torch.cat([h, kv.to(h.dtype) + self.text_pos[:L].to(h.dtype)], dim=1)  # (B, N + L, D)
        keys = torch.cat([torch.ones(B, N, dtype=torch.bool, device=mask.device), mask.bool()], dim=1)
        return seq, None, keys

    def out_block(self, i: int, h: torch.Tensor, skip: torch.Tensor, mod, kv, mask) -> torch.Tensor:
        """Out block i: merge its skip (the matching in block's output) into h, then the block."""
        return self.out_blocks[i](self.skips[i](torch.cat([h, skip], dim=-1)), mod, kv, mask)  # (B, N, D)

    def output(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Final modulated norm, linear, un-patchify and the residual 3x3 conv: h (B, N, D) ->
        velocity (B, C, S, S)."""
        p, C = self.cfg.patch, self.cfg.latent_channels
        g = self.cfg.latent_size // p
        h = h[:, : g * g]  # joint mode: drop the text tokens
        B, N, _ = h.shape
        shift, scale = self.final_mod(F.silu(c)).chunk(2, dim=-1)  # (B, D) each
        h = self.final(self.final_norm(h) * (1 + scale[:, None]) + shift[:, None])  # (B, N, p*p*C)
        v = h.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, g * p, g * p)  # (B, C, S, S)
        return v + self.head(v)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
                pooled: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, S, S) noisy latents; t: (B,) in [0, 1]; ctx: (B, L, 384); mask: (B, L) bool;
        pooled: (B, 384); d: (B,) shortcut step size (only with cfg.step_size_cond; see DiT).
        Returns the velocity, (B, C, S, S)."""
        h = self.embed(x)  # (B, N, D)
        c, mod, kv = self.condition(t, ctx, pooled, h.dtype, d)
        h, kv, mask = self.join(h, kv, mask)  # joint mode: (B, N + L, D), None, (B, N + L)
        skips = []
        for blk in self.in_blocks:
            h = blk(h, mod, kv, mask)
            skips.append(h)  # (B, N, D)
        if self.mid_block is not None:
            h = self.mid_block(h, mod, kv, mask)
        for i in range(len(self.out_blocks)):
            h = self.out_block(i, h, skips.pop(), mod, kv, mask)
        return self.output(h, c)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
