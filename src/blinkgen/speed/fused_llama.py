"""Speed device: the decode-only fused view of a `Llama` (fused projections, fewer ops per token).

A speed device takes a network (here a `Llama`, whose own `forward_cached` is the module-by-module
reference) and returns an object with the same decode interface -- `cfg`, `embed(ids)`,
`head(h)`, `forward_cached(x, input_pos, cache, key_mask, causal)` -- that the samplers in
`sampling/ar.py`, `sampling/maskgit.py` and `sampling/speculative.py` run unchanged. The samplers
never pick a device themselves: the pipeline (`families/ar`) hands them `fused_view(llama)`.

Why its own module: `models/llama.py` holds the architecture and its checkpoint layout, which
training and `transformers` export depend on; this view is built from those weights at decode
time, measured in bench/bench_ar.py, and can change without touching the layout.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.llama import DecoderLayer, KVCache, Llama, rms_norm, signed_sin


def _fused_linear(*parts: nn.Linear) -> nn.Linear:
    """One bias-free Linear whose output is the parts' outputs side by side (a frozen copy)."""
    w = torch.cat([p.weight.detach() for p in parts])  # (sum of out_features, in_features)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
    lin.weight = nn.Parameter(w, requires_grad=False)
    return lin


class FusedBlock(nn.Module):
    """One decoder layer for inference: q/k/v and gate/up fused into single matmuls (copies);
    the norms, o_proj and down_proj are the layer's own modules (shared, not copied)."""

    def __init__(self, layer: DecoderLayer):
        super().__init__()
        a, m = layer.self_attn, layer.mlp
        self.attn_norm, self.mlp_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.qkv = _fused_linear(a.q_proj, a.k_proj, a.v_proj)  # D -> (H + 2 Hkv) d
        self.o = a.o_proj
        self.gate_up = _fused_linear(m.gate_proj, m.up_proj)  # D -> 2 F
        self.down = m.down_proj


class FusedLlama(nn.Module):
    """The inference view of a `Llama`: same maths, fewer and cheaper ops per token.

    Why: at batch 1-2 on a CPU a decode step is a few dozen tiny matmuls plus ~60 other ops per
    layer, and each op costs microseconds of dispatch whatever its size. Here each layer runs two
    fused matmuls where the reference runs five (q/k/v and gate/up concatenated at build time), rotary
    embedding treats q and k heads as one tensor (one flip with a sign-folded sin table instead
    of chunk/neg/cat), RMSNorm is one fused op, activations stay 2-D (rows = B*T) between matmuls, and
    the mask and rotary tables are built once per call, not per layer.

    The checkpoint layout is untouched: the fused weights are copies made here (q/k/v and
    gate/up, about 70% of the layer weights, so a second copy of those lives in memory while this
    view does); everything else is the Llama's own modules. `fused_view(llama)` caches one and rebuilds
    it when the weights change. Exposes the decode interface the samplers use: `cfg`, `embed`,
    `head`, `forward_cached`. Its Linear submodules are plain `nn.Linear`, so
    `torch.ao.quantization.quantize_dynamic` and `torch.compile` treat it like any module."""

    def __init__(self, llama: Llama):
        super().__init__()
        self.cfg = c = llama.cfg
        with torch.inference_mode(False), torch.no_grad():  # fused copies are ordinary tensors
            self.layers = nn.ModuleList([FusedBlock(layer) for layer in llama.model.layers])
        self.embed_tokens, self.norm, self.lm_head = llama.model.embed_tokens, llama.model.norm, llama.lm_head
        dt = llama.lm_head.weight.dtype
        self.register_buffer("rope_cos", llama.rope_cos.to(dt), persistent=False)  # (S, d)
        self.register_buffer("rope_sin", signed_sin(llama.rope_sin).to(dt), persistent=False)  # (S, d)
        self.register_buffer("slots", torch.arange(c.max_seq_len, device=llama.rope_cos.device),
                             persistent=False)  # (S,)

    @staticmethod
    def weights_key(llama: Llama) -> tuple:
        """Identity of the weights a FusedLlama copies: (address, version, dtype) of each.
        Inference tensors keep no version counter; for them only a replaced tensor is noticed."""
        out = []
        for layer in llama.model.layers:
            a, m = layer.self_attn, layer.mlp
            for lin in (a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj):
                w = lin.weight
                out.append((w.data_ptr(), -1 if w.is_inference() else w._version, w.dtype, w.device))
        return tuple(out)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)  # (B, T, D)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(rms_norm(h, self.norm.weight, self.cfg.norm_eps))  # (B, T, V)

    def forward_cached(self, x: torch.Tensor, input_pos: torch.Tensor, cache: KVCache,
                       key_mask: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """`Llama.forward_cached` (same arguments, same result to float rounding)."""
        c = self.cfg
        B, T, D = x.shape
        H, Hkv, d, eps = c.n_heads, c.kv_heads, c.head_dim, c.norm_eps
        S = cache.max_len
        if causal:
            seen = self.slots[:S][None, :] <= input_pos[:, None]  # (T, S)
            allowed = seen[None, None] & key_mask[:, None, None, :]  # (B, 1, T, S)
        else:
            allowed = key_mask[:, None, None, :].expand(B, 1, T, S)  # (B, 1, T, S)
        # additive mask made once here, not converted from bool inside every layer's attention
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, float("-inf"))
        cos = self.rope_cos[input_pos][:, None]  # (T, 1, d): broadcasts over batch and heads
        sin = self.rope_sin[input_pos][:, None]
        h = x.reshape(B * T, D)  # rows = positions; matmuls see 2-D inputs
        for i, blk in enumerate(self.layers):
            qkv = blk.qkv(rms_norm(h, blk.attn_norm.weight, eps)).view(B, T, H + 2 * Hkv, d)
            qk = qkv[:, :, :H + Hkv]  # (B, T, H + Hkv, d): rotary on q and k heads together
            swapped = qk.unflatten(-1, (2, d // 2)).flip(-2).flatten(-2)  # [x2, x1]: one copy
            qk = torch.addcmul(qk * cos, swapped, sin)
            q = qk[:, :, :H].transpose(1, 2)  # (B, H, T, d)
            cache.k[i].index_copy_(2, input_pos, qk[:, :, H:].transpose(1, 2))  # (B, Hkv, T, d)
            cache.v[i].index_copy_(2, input_pos, qkv[:, :, H + Hkv:].transpose(1, 2))
            y = F.scaled_dot_product_attention(q, cache.k[i], cache.v[i], attn_mask=mask,
                                               enable_gqa=H != Hkv)  # (B, H, T, d)
            h = h + blk.o(y.transpose(1, 2).reshape(B * T, H * d))  # (BT, D)
            g, u = blk.gate_up(rms_norm(h, blk.mlp_norm.weight, eps)).chunk(2, dim=-1)  # (BT, F) each
            h = h + blk.down(F.silu(g) * u)
        return h.view(B, T, D)


_VIEWS: "weakref.WeakKeyDictionary[Llama, tuple[tuple, FusedLlama]]" = weakref.WeakKeyDictionary()


def fused_view(net):
    """The decode view the pipelines run: for a `Llama`, its `FusedLlama`, built on first use and
    rebuilt whenever a weight it copies was replaced or changed in place (an optimizer step, a
    load_state_dict, a .to()): the check reads each weight's storage address and version counter,
    microseconds per call, so callers may ask every time. Anything else that already has the decode
    interface (a FusedLlama, its int8 copy) comes back as it is. The cache is keyed weakly by the
    Llama, so it never keeps a model alive and never enters its state_dict."""
    if not isinstance(net, Llama):
        return net
    key = FusedLlama.weights_key(net)
    hit = _VIEWS.get(net)
    if hit is None or hit[0] != key:
        hit = (key, FusedLlama(net))
        _VIEWS[net] = hit
    return hit[1]
