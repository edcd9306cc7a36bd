"""Decoding image tokens from a Llama: static KV cache, prefill/decode split, batched CFG.

Why this shape (after: LlamaGen generate.py, gpt-fast): the cache is preallocated for the whole
sequence, `prefill` runs the text prefix once, and `decode_one_token` is one fixed-shape step
(input position is a tensor, not a Python int), so it compiles with `torch.compile(fullgraph=True)`
once and is replayed for every token. Classifier-free guidance doubles the batch
([conditional; unconditional]) so one network call serves both.

Randomness: every sample owns a CPU `torch.Generator`; all its uniforms (one per token) are drawn
up front and tokens are picked by inverse-CDF from those uniforms. A sample therefore never
depends on its batch-mates, the device, or whether the step was compiled.

Everything here is a pure function of (network, prefix, uniforms, settings). The network is any
decode view (`cfg`, `embed`, `head`, `forward_cached`): a `Llama` itself (module by module) or a
speed device's view of one (`blinkgen.speed.fused_llama.fused_view`, `speed.int8.int8_view`), which
the pipeline chooses; `speed.compile.compiled_step` compiles the one-token step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..models.llama import KVCache, Llama

# callback(done_tokens, total_tokens) -> None; raising inside aborts the decode.
TokenCallback = Callable[[int, int], None] | None


@dataclass(frozen=True)
class DecodeSettings:
    """temperature 0 = greedy; top_k 0 = off; top_p 1 = off; guidance 1 = no CFG (not doubled)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance: float = 1.0

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.guidance < 0:
            raise ValueError(f"invalid decode settings: {self}")

    @property
    def cfg(self) -> bool:
        """Guidance 1 is exactly the conditional model (u + 1*(c-u) = c), so skip the extra batch."""
        return self.guidance != 1.0


def draw_uniforms(generators: list[torch.Generator], n: int) -> torch.Tensor:
    """(B, n) float32 uniforms in [0, 1), row b from generators[b] alone (CPU generators, so the
    same seed gives the same draws on every device)."""
    return torch.stack([torch.rand(n, generator=g, device=g.device, dtype=torch.float32)
                        for g in generators]).cpu()


def combine_cfg(logits: torch.Tensor, guidance: float) -> torch.Tensor:
    """logits (2B, V) = [cond; uncond] -> uncond + g * (cond - uncond), (B, V) float32."""
    cond, uncond = logits.float().chunk(2, dim=0)  # (B, V) each
    return uncond + guidance * (cond - uncond)


def filtered_probs(logits: torch.Tensor, s: DecodeSettings) -> torch.Tensor:
    """logits (B, V) -> the target distribution (B, V) float32 after temperature, top-k, top-p.
    Greedy (temperature 0) is the one-hot of the argmax, so every caller can treat it as sampling."""
    logits = logits.float()
    if s.temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()  # (B, V)
    logits = logits / s.temperature
    if 0 < s.top_k < logits.shape[-1]:
        kth = torch.topk(logits, s.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        srt, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        p = srt.softmax(-1)
        drop = (p.cumsum(-1) - p) > s.top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits.softmax(-1)  # (B, V)


def sample_from_probs(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: probs (B, V) (need not be normalised), u (B,) in [0, 1) -> (B,) long.
    Picks the first token whose cumulative mass exceeds u * total; zero-mass tokens never win."""
    cdf = probs.cumsum(-1)  # (B, V)
    target = u.to(cdf.dtype)[:, None] * cdf[:, -1:]  # (B, 1)
    return (cdf <= target).sum(-1).clamp(max=probs.shape[-1] - 1)  # (B,)


def next_token(logits: torch.Tensor, u: torch.Tensor, s: DecodeSettings) -> torch.Tensor:
    """Last-position logits ((2B, V) under CFG, else (B, V)) -> tokens (B,)."""
    if s.cfg:
        logits = combine_cfg(logits, s.guidance)  # (B, V)
    if s.temperature == 0:
        # What sample_from_probs gives for the one-hot of the argmax (the cdf is 0 before it and
        # 1 from it on, and u < 1), without the eight ops that compute it.
        return logits.argmax(-1)  # (B,)
    return sample_from_probs(filtered_probs(logits, s), u)


def prefill(llama, prefix: torch.Tensor, key_mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Run the prefix (B2, P, D) at positions 0..P-1 into the cache; logits of the last (B2, V).
    llama: a Llama or any decode view of one (see the module doc)."""
    pos = torch.arange(prefix.shape[1], device=prefix.device)  # (P,)
    h = llama.forward_cached(prefix, pos, cache, key_mask)  # (B2, P, D)
    return llama.head(h[:, -1:])[:, 0]  # (B2, V)


def decode_one_token(llama, tokens: torch.Tensor, input_pos: torch.Tensor, cache: KVCache,
                     key_mask: torch.Tensor, u: torch.Tensor, s: DecodeSettings) -> torch.Tensor:
    """One fixed-shape step: feed tokens (B,) at input_pos (1,), return the next tokens (B,).
    llama: the decode view, resolved once by the caller, so no per-step weight checks happen here.
    Compiles with fullgraph=True (`speed.compile.compiled_step`): no Python branching on tensor
    values, no .item()."""
    if s.cfg:
        tokens = torch.cat([tokens, tokens])  # (2B,): both halves continue the same image
    x = llama.embed(tokens[:, None])  # (B2, 1, D)
    logits = llama.head(llama.forward_cached(x, input_pos, cache, key_mask))[:, 0]  # (B2, V)
    return next_token(logits, u, s)


def _check(prefix: torch.Tensor, prefix_mask: torch.Tensor, uniforms: torch.Tensor, s: DecodeSettings):
    B = uniforms.shape[0]
    rows = 2 * B if s.cfg else B
    if prefix.shape[0] != rows or prefix_mask.shape != prefix.shape[:2]:
        raise ValueError(f"prefix {tuple(prefix.shape)} / mask {tuple(prefix_mask.shape)} do not fit "
                         f"{B} samples (CFG doubles the rows: {s.cfg})")


def full_key_mask(prefix_mask: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Prefix padding mask (B2, P) -> cache mask (B2, P + n_tokens); image slots are always valid."""
    ones = prefix_mask.new_ones(prefix_mask.shape[0], n_tokens)
    return torch.cat([prefix_mask, ones], dim=1)


@torch.inference_mode()
def decode(llama: Llama, prefix: torch.Tensor, prefix_mask: torch.Tensor, uniforms: torch.Tensor,
           s: DecodeSettings, step: Callable = decode_one_token,
           callback: TokenCallback = None) -> torch.Tensor:
    """KV-cached decoding of N = uniforms.shape[1] tokens after the prefix.

    prefix (B2, P, D) in the network dtype, [cond; uncond] rows under CFG; prefix_mask (B2, P) bool;
    uniforms (B, N) from `draw_uniforms`; step: `decode_one_token` or `speed.compile.compiled_step()`.
    llama: a Llama or a decode view of one (what it is, is the caller's choice; see the module doc).
    Returns tokens (B, N) long."""
    _check(prefix, prefix_mask, uniforms, s)
    net = llama
    B, N = uniforms.shape
    dev = prefix.device
    u = uniforms.to(dev)
    # Token i is fed back at position P + i; the last token is never fed, so P + N - 1 slots.
    key_mask = full_key_mask(prefix_mask, N - 1)  # (B2, P + N - 1)
    cache = KVCache.allocate(net.cfg, prefix.shape[0], key_mask.shape[1], prefix.dtype, dev)
    out = torch.empty(B, N, dtype=torch.long, device=dev)
    out[:, 0] = next_token(prefill(net, prefix, key_mask, cache), u[:, 0], s)
    P = prefix.shape[1]
    if callback is not None:
        callback(1, N)
    pos = torch.empty(1, dtype=torch.long, device=dev)  # (1,), rewritten in place: no per-step allocation
    for i in range(1, N):
        pos.fill_(P + i - 1)
        out[:, i] = step(net, out[:, i - 1], pos, cache, key_mask, u[:, i], s)
        if callback is not None:
            callback(i + 1, N)
    return out


@torch.inference_mode()
def decode_no_cache(llama: Llama, prefix: torch.Tensor, prefix_mask: torch.Tensor,
                    uniforms: torch.Tensor, s: DecodeSettings, callback: TokenCallback = None) -> torch.Tensor:
    """The naive rung: re-run the whole sequence for every token (O(N^2) work). Same uniforms and
    token rule as `decode`, so under identical arithmetic it yields identical tokens.
    callback(done_tokens, total_tokens) after each token, as in `decode`."""
    _check(prefix, prefix_mask, uniforms, s)
    B, N = uniforms.shape
    u = uniforms.to(prefix.device)
    out = torch.empty(B, 0, dtype=torch.long, device=prefix.device)
    for i in range(N):
        fed = out.repeat(2, 1) if s.cfg else out  # (B2, i)
        x = torch.cat([prefix, llama.embed(fed)], dim=1)  # (B2, P + i, D)
        h = llama.forward_embeds(x, full_key_mask(prefix_mask, i))  # (B2, P + i, D)
        tok = next_token(llama.head(h[:, -1:])[:, 0], u[:, i], s)  # (B,)
        out = torch.cat([out, tok[:, None]], dim=1)
        if callback is not None:
            callback(i + 1, N)
    return out
