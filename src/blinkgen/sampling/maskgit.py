"""Parallel decoding for the masked mode (models/masked_t2i.py): K passes fill N image slots.

Each pass (after: MaskGIT, Chang et al. 2022): predict every slot from the current canvas, draw a
token for each still-masked slot, score each draw by its log-probability plus annealed Gumbel noise
(temperature `choice_temperature * (1 - (k+1)/K)`), and keep the best-scoring draws; the rest are
masked again. How many stay masked after pass k follows the cosine schedule
floor(N cos(pi/2 (k+1)/K)), forced to shrink by at least one per pass and to reach 0 at the end.

Cost: the text prefix is causal, so its keys/values go into a static cache once; each pass then
runs the N image rows against that cache (`forward_cached(causal=False)` overwrites the image
slots' keys/values in place). CFG doubles the batch, as in sampling/ar.py.

Randomness: each sample owns a CPU generator; all its uniforms (K passes x [token draw, Gumbel]
x N slots) are drawn up front, so a sample depends on its seed alone, never its batch-mates.
"""
from __future__ import annotations

import math

import torch

from ..models.llama import KVCache
from .ar import DecodeSettings, TokenCallback, combine_cfg, filtered_probs, full_key_mask, sample_from_probs

DEFAULT_CHOICE_TEMPERATURE = 4.5  # MaskGIT's value; bench_maskgit.py sweeps it


def masking_schedule(steps: int, n_tokens: int) -> list[int]:
    """How many slots stay masked after each of `steps` passes: strictly decreasing, ends at 0."""
    if not 1 <= steps <= n_tokens:
        raise ValueError(f"steps must be between 1 and {n_tokens} (one slot per pass at least), got {steps}")
    out, prev = [], n_tokens
    for k in range(steps):
        m = math.floor(n_tokens * math.cos(math.pi / 2 * (k + 1) / steps))
        m = max(0, min(m, prev - 1, n_tokens - (k + 1)))  # at least one new slot every pass
        m = max(m, steps - (k + 1)) if k < steps - 1 else 0  # and one left for each later pass
        out.append(m)
        prev = m
    return out


def draw_maskgit_uniforms(generators: list[torch.Generator], steps: int, n_tokens: int) -> torch.Tensor:
    """(B, steps, 2, N) uniforms in [0, 1): [:, k, 0] picks tokens, [:, k, 1] the Gumbel noise."""
    return torch.stack([torch.rand(steps * 2 * n_tokens, generator=g, device=g.device)
                        for g in generators]).cpu().view(len(generators), steps, 2, n_tokens)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))


@torch.inference_mode()
def maskgit_decode(model, prefix: torch.Tensor, prefix_mask: torch.Tensor, uniforms: torch.Tensor,
                   s: DecodeSettings, choice_temperature: float = DEFAULT_CHOICE_TEMPERATURE,
                   net=None, callback: TokenCallback = None, tokens: torch.Tensor | None = None,
                   masked: torch.Tensor | None = None) -> torch.Tensor:
    """model: a MaskedTextToImage; prefix (B2, P, D) / prefix_mask (B2, P) from
    `model.conditioning` ([cond; uncond] rows under CFG); uniforms (B, K, 2, N) from
    `draw_maskgit_uniforms`; net: the Llama's decode view to run (default the Llama itself, module
    by module; the pipeline passes its fused view, the bench an int8 one). Returns tokens (B, N)
    long. callback(done_slots, M) per pass.

    Editing (MaskGIT's inpainting / re-masking): `tokens` (B, N) long with `masked` (B, N) bool is
    a starting canvas; the unmasked slots are kept as given and never redrawn, and the K passes
    fill the M masked slots (the same M in every row, K <= M) on masking_schedule(K, M). Default:
    an empty canvas, all N slots masked."""
    B, K, _, N = uniforms.shape
    rows = 2 * B if s.cfg else B
    if prefix.shape[0] != rows or prefix_mask.shape != prefix.shape[:2]:
        raise ValueError(f"prefix {tuple(prefix.shape)} does not fit {B} samples (CFG: {s.cfg})")
    if (tokens is None) != (masked is None):
        raise ValueError("give both tokens and masked (a starting canvas), or neither")
    M = N if masked is None else int(masked[0].sum())
    if masked is not None and not bool((masked.sum(dim=1) == M).all()):
        raise ValueError(f"every row of the canvas must mask the same number of slots, got {masked.sum(dim=1).tolist()}")
    schedule = masking_schedule(K, M)
    net = model.llama if net is None else net
    dev, P = prefix.device, prefix.shape[1]
    u = uniforms.to(dev)
    key_mask = full_key_mask(prefix_mask, N)  # (B2, P + N)
    cache = KVCache.allocate(net.cfg, rows, P + N, prefix.dtype, dev)
    net.forward_cached(prefix, torch.arange(P, device=dev), cache, key_mask)  # prefix K/V, once
    img_pos = torch.arange(P, P + N, device=dev)  # (N,)
    if tokens is None:
        tokens = torch.zeros(B, N, dtype=torch.long, device=dev)
        masked = torch.ones(B, N, dtype=torch.bool, device=dev)
    else:
        tokens, masked = tokens.to(dev), masked.to(dev)
    for k, n_after in enumerate(schedule):
        x = model.image_embeds(tokens, masked)  # (B, N, D)
        if s.cfg:
            x = torch.cat([x, x])  # (2B, N, D): both halves see the same canvas
        logits = net.head(net.forward_cached(x, img_pos, cache, key_mask, causal=False))  # (B2, N, V)
        if s.cfg:
            logits = combine_cfg(logits, s.guidance)  # (B, N, V)
        probs = filtered_probs(logits.flatten(0, 1), s)  # (B N, V)
        drawn = sample_from_probs(probs, u[:, k, 0].flatten())  # (B N,)
        logp = probs.gather(1, drawn[:, None]).clamp_min(1e-30).log().view(B, N)  # (B, N)
        score = logp + choice_temperature * (1 - (k + 1) / K) * gumbel(u[:, k, 1])  # (B, N)
        score = score.masked_fill(~masked, float("inf"))  # decided slots never re-mask
        rank = score.argsort(dim=1).argsort(dim=1)  # (B, N): 0 = least confident
        still = rank < n_after  # the n_after least confident stay masked (all still-masked ones)
        tokens = torch.where(masked & ~still, drawn.view(B, N), tokens)
        masked = still
        if callback is not None:
            callback(M - n_after, M)
    return tokens
