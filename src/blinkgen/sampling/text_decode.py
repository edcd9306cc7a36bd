"""Text decoding for the captioner (models/captioner.py): greedy and beam search over a static KV
cache. Pure functions of (network, prefix, settings): no randomness, so a caption is a function
of the image alone, whatever else is in the batch.

Both run the prefix and <bos> once (prefill), then one position per step against the cache
(`Llama.forward_cached`); beam search reorders the cache rows when a beam takes over another's
history. (after: the standard beam search with length normalisation, Wu et al. 2016, GNMT, with
alpha = 1: a finished beam is scored by its mean log-probability per token.)
"""
from __future__ import annotations

import torch

from ..models.llama import KVCache, Llama


def _prefill(llama: Llama, prefix: torch.Tensor, bos: int, max_len: int) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
    """prefix (B, P, D) + <bos> through the network -> (log-probs of the first word (B, V) fp32,
    the cache sized for max_len more positions, the key mask (B, S))."""
    B, P, _ = prefix.shape
    S = P + 1 + max_len
    cache = KVCache.allocate(llama.cfg, B, S, prefix.dtype, prefix.device)
    key_mask = torch.ones(B, S, dtype=torch.bool, device=prefix.device)
    x = torch.cat([prefix, llama.embed(torch.full((B, 1), bos, device=prefix.device))], dim=1)  # (B, P+1, D)
    h = llama.forward_cached(x, torch.arange(P + 1, device=prefix.device), cache, key_mask)  # (B, P+1, D)
    return llama.head(h[:, -1]).float().log_softmax(-1), cache, key_mask


def _step(llama: Llama, tokens: torch.Tensor, pos: int, cache: KVCache, key_mask: torch.Tensor) -> torch.Tensor:
    """Feed tokens (B,) at position pos -> log-probs of the next (B, V) fp32."""
    h = llama.forward_cached(llama.embed(tokens[:, None]), torch.tensor([pos], device=tokens.device), cache, key_mask)
    return llama.head(h[:, -1]).float().log_softmax(-1)


@torch.inference_mode()
def greedy_decode(llama: Llama, prefix: torch.Tensor, bos: int, eos: int, max_len: int) -> torch.Tensor:
    """The most likely next word at every step. prefix (B, P, D) -> ids (B, L) long, L <= max_len,
    each row ending in <eos> (or cut at max_len); rows that finish early are padded with <eos>."""
    logp, cache, key_mask = _prefill(llama, prefix, bos, max_len)
    P = prefix.shape[1]
    done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
    out = []
    for i in range(max_len):
        tok = logp.argmax(-1).masked_fill(done, eos)  # (B,)
        out.append(tok)
        done |= tok == eos
        if bool(done.all()) or i == max_len - 1:
            break
        logp = _step(llama, tok, P + 1 + i, cache, key_mask)
    return torch.stack(out, dim=1)


@torch.inference_mode()
def beam_decode(llama: Llama, prefix: torch.Tensor, bos: int, eos: int, max_len: int, beams: int = 4) -> torch.Tensor:
    """Beam search of width `beams`; a finished beam (it wrote <eos>) keeps its score and grows
    no further; the winner maximises the mean log-probability per token (<eos> included).
    prefix (B, P, D) -> ids (B, L) long, padded with <eos>. beams=1 is greedy decoding."""
    B, P, _ = prefix.shape
    K = beams
    logp, cache, key_mask = _prefill(llama, prefix, bos, max_len)  # (B, V)
    V = logp.shape[-1]
    score, tok = logp.topk(K, dim=-1)  # (B, K) each: the K best first words
    seqs = tok[..., None]  # (B, K, 1)
    done = tok == eos  # (B, K)
    lengths = torch.ones(B, K, device=prefix.device)
    cache.k = [t.repeat_interleave(K, dim=0) for t in cache.k]  # (B*K, H, S, d)
    cache.v = [t.repeat_interleave(K, dim=0) for t in cache.v]
    key_mask = key_mask.repeat_interleave(K, dim=0)
    only_eos = torch.full((V,), float("-inf"), device=prefix.device)
    only_eos[eos] = 0.0
    for i in range(1, max_len):
        if bool(done.all()):
            break
        logp = _step(llama, seqs[..., -1].flatten(), P + i, cache, key_mask).view(B, K, V)
        logp = torch.where(done[..., None], only_eos, logp)  # a finished beam only "writes" <eos>, for free
        cand = (score[..., None] + logp).view(B, K * V)  # (B, K*V)
        score, idx = cand.topk(K, dim=-1)  # (B, K)
        origin, word = idx // V, idx % V  # (B, K): which beam it extends, with which word
        rows = (origin + torch.arange(B, device=prefix.device)[:, None] * K).flatten()  # (B*K,)
        cache.k = [t.index_select(0, rows) for t in cache.k]
        cache.v = [t.index_select(0, rows) for t in cache.v]
        was_done = done.gather(1, origin)
        lengths = lengths.gather(1, origin) + (~was_done).float()
        seqs = torch.cat([seqs.gather(1, origin[..., None].expand(-1, -1, seqs.shape[-1])), word[..., None]], dim=-1)
        done = was_done | (word == eos)
    best = (score / lengths).argmax(-1)  # (B,)
    return seqs[torch.arange(B, device=prefix.device), best]  # (B, L)
