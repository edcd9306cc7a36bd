"""Speculative Jacobi decoding (SJD): several image tokens per network call, same distribution.

Algorithm (Teng et al. 2024, "Accelerating Auto-regressive Text-to-Image Generation with
Training-free Speculative Jacobi Decoding"; acceptance rule of Leviathan et al. 2023 / Chen et al.
2023; Jacobi iteration of Santilli et al. 2023): keep a window of W draft tokens, each with the
proposal distribution q it was drawn from. One causal pass over [last final token, drafts] gives
the target distribution p at every window position. Walk the window left to right and accept
draft x with probability min(1, p(x)/q(x)); at the first rejection draw the token from
norm(max(0, p - q)) and stop (if all W pass, draw one bonus token from p). Each output token is
then distributed exactly as p given its prefix, whatever q was, so quality equals plain sampling.
The target distributions this pass computed past the rejection point (conditioned on stale drafts)
become the next proposals — the Jacobi fixed-point step; fresh window slots start uniform.

Under greedy decoding p is one-hot, the rule reduces to "accept while draft == argmax", and the
output is exactly the greedy sequence. At least one token is final per pass, so it never takes
more passes than plain decoding; `SJDStats` reports the accepted tokens per pass.

Why one sample at a time: each sample accepts a different number of tokens per pass, and SJD buys
latency at batch 1 (a memory-bound pass costs about the same for 1 or W+1 positions). A batch is
a loop over its samples, each with its own generator, so batch-mates never interact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models.llama import KVCache, Llama
from .ar import DecodeSettings, combine_cfg, filtered_probs, full_key_mask, prefill, sample_from_probs

# A residual max(0, p - q) with less mass than this means p == q up to rounding; a rejection then
# had ~zero probability, and the draw falls back to p itself instead of dividing by ~0.
RESIDUAL_EPS = 1e-6


@dataclass
class SJDStats:
    tokens: int = 0
    passes: int = 0  # network calls after the prefill
    accepted: list[int] = field(default_factory=list)  # final tokens produced by each pass

    @property
    def tokens_per_pass(self) -> float:
        return sum(self.accepted) / max(1, self.passes)


def verify_drafts(drafts: torch.Tensor, q: torch.Tensor, p: torch.Tensor, r: torch.Tensor,
                  u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The speculative acceptance rule, batched over independent trials.

    drafts (B, W) long, drawn from q (B, W, V); p (B, W+1, V) the targets (row W: after the last
    draft); r (B, W) and u (B,) uniforms. Returns n_accepted (B,) in 0..W and the token (B,) that
    follows the accepted drafts: drawn from the residual at the first rejection, or from p[W]."""
    B, W = drafts.shape
    pd = p[:, :W].gather(-1, drafts[..., None])[..., 0]  # (B, W) target mass of each draft
    qd = q.gather(-1, drafts[..., None])[..., 0]  # (B, W) proposal mass of each draft
    accept = r * qd < pd  # (B, W): r < min(1, p/q) without dividing
    n_acc = accept.long().cumprod(-1).sum(-1)  # (B,) leading run of acceptances
    res = (p[:, :W] - q).clamp(min=0)  # (B, W, V)
    res = torch.where(res.sum(-1, keepdim=True) > RESIDUAL_EPS, res, p[:, :W])
    dist = torch.cat([res, p[:, W:]], dim=1)  # (B, W+1, V)
    row = dist[torch.arange(B, device=p.device), n_acc]  # (B, V)
    return n_acc, sample_from_probs(row, u)


def _target(logits: torch.Tensor, s: DecodeSettings) -> torch.Tensor:
    """logits (R, T, V), R = 2 under CFG -> target probabilities (T, V) float32."""
    if s.cfg:  # flatten (2, T, V) -> (2T, V) = [cond rows; uncond rows], as combine_cfg expects
        return filtered_probs(combine_cfg(logits.flatten(0, 1), s.guidance), s)  # (T, V)
    return filtered_probs(logits[0], s)  # (T, V)


def _uniform_drafts(n: int, V: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.randint(V, (n,), generator=g, device=g.device).cpu()  # (n,)
    return d, torch.full((n, V), 1.0 / V)  # drafts, their proposal q (n, V)


@torch.inference_mode()
def speculative_jacobi_decode(llama: Llama, prefix: torch.Tensor, prefix_mask: torch.Tensor,
                              n_tokens: int, generator: torch.Generator, s: DecodeSettings,
                              window: int = 16) -> tuple[torch.Tensor, SJDStats]:
    """One sample. prefix (R, P, D), R = 2 ([cond; uncond]) under CFG else 1; prefix_mask (R, P).
    Returns tokens (n_tokens,) long on CPU, and the pass statistics."""
    R = 2 if s.cfg else 1
    if prefix.shape[0] != R or window < 1:
        raise ValueError(f"SJD takes one sample: prefix rows must be {R}, window >= 1")
    V, N, P, dev = llama.cfg.vocab_size, n_tokens, prefix.shape[1], prefix.device
    g = generator
    rand = lambda n: torch.rand(n, generator=g, device=g.device).cpu()  # noqa: E731
    # One spare slot past the last token: a pass always feeds [last final, all drafts].
    key_mask = full_key_mask(prefix_mask, N)  # (R, P + N)
    cache = KVCache.allocate(llama.cfg, R, key_mask.shape[1], prefix.dtype, dev)
    out = torch.empty(N, dtype=torch.long)
    p0 = _target(prefill(llama, prefix, key_mask, cache)[:, None], s).cpu()  # (1, V)
    out[0] = sample_from_probs(p0, rand(1))[0]
    done, stats = 1, SJDStats()
    drafts, q = _uniform_drafts(min(window, N - 1), V, g)
    while done < N:
        w = drafts.shape[0]
        fed = torch.cat([out[done - 1:done], drafts]).to(dev)  # (w+1,)
        pos = torch.arange(P + done - 1, P + done + w, device=dev)  # (w+1,)
        h = llama.forward_cached(llama.embed(fed[None].expand(R, -1)), pos, cache, key_mask)
        p = _target(llama.head(h), s).cpu()  # (w+1, V): targets for tokens done..done+w
        k, nxt = verify_drafts(drafts[None], q[None], p[None], rand(w)[None], rand(1))
        k = int(k[0])
        out[done:done + k] = drafts[:k]
        new = k + 1 if done + k < N else k
        if done + k < N:
            out[done + k] = nxt[0]
        done += new
        stats.passes += 1
        stats.accepted.append(new)
        # Next window: Jacobi proposals from this pass's targets past the new token, then uniform.
        want = min(window, N - done)
        jac = p[k + 1:k + 1 + want]  # (<=want, V), targets for tokens done.. (stale context)
        d_j = sample_from_probs(jac, rand(jac.shape[0])) if jac.shape[0] else torch.empty(0, dtype=torch.long)
        d_u, q_u = _uniform_drafts(want - jac.shape[0], V, g)
        drafts, q = torch.cat([d_j, d_u]), torch.cat([jac, q_u])
    stats.tokens = N
    return out, stats


def speculative_decode_batch(llama: Llama, prefix: torch.Tensor, prefix_mask: torch.Tensor,
                             n_tokens: int, generators: list[torch.Generator], s: DecodeSettings,
                             window: int = 16, callback=None) -> tuple[torch.Tensor, list[SJDStats]]:
    """prefix (B2, P, D) laid out as for `ar.decode` ([cond; uncond] under CFG). -> (B, N), stats.
    callback(done_tokens, total_tokens) after each sample."""
    B = len(generators)
    if prefix.shape[0] != (2 * B if s.cfg else B):
        raise ValueError("prefix rows do not match the number of generators")
    toks, stats = [], []
    for b, g in enumerate(generators):
        rows = [b, B + b] if s.cfg else [b]
        t, st = speculative_jacobi_decode(llama, prefix[rows], prefix_mask[rows], n_tokens, g, s, window)
        toks.append(t)
        stats.append(st)
        if callback is not None:
            callback((b + 1) * n_tokens, B * n_tokens)
    return torch.stack(toks).to(prefix.device), stats
