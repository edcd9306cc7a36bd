"""A standard Llama decoder (RMSNorm, rotary positions, SwiGLU, optional grouped-query attention).

Why exactly Llama, with exactly transformers' parameter names (`model.embed_tokens`,
`model.layers.N.self_attn.q_proj`, ..., `model.norm`, `lm_head`): a trained image-token model is
then an ordinary LLM checkpoint. `transformers.LlamaForCausalLM` loads our safetensors unchanged, so
vLLM, llama.cpp and friends can serve it (DESIGN.md, "Formats"). Rotary embedding uses the
rotate-half layout transformers uses, for the same reason.

Two entry points, one per mode (no argument-is-None switches): `forward_embeds` runs a whole
sequence causally (training, the no-cache baseline); `forward_cached` runs T new positions against
a preallocated static `KVCache` (prefill, one-token decode, speculative windows).
(after: nanoGPT model.py for the one-file layout; LlamaGen gpt.py for the static cache.)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


def _round_up(n: int, k: int) -> int:
    return ((n + k - 1) // k) * k


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 1000
    dim: int = 256
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int | None = None  # None -> n_heads (plain multi-head attention)
    intermediate_size: int | None = None  # None -> SwiGLU's 2/3 * 4 * dim, rounded to multiple_of
    multiple_of: int = 64
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02  # transformers' initializer_range default

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.kv_heads}")

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return _round_up(int(2 * 4 * self.dim / 3), self.multiple_of)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "LlamaConfig":
        names = {f.name for f in fields(LlamaConfig)}
        return LlamaConfig(**{k: v for k, v in d.items() if k in names})

    def to_hf_config(self):
        """The equivalent `transformers.LlamaConfig` (works with transformers 4.x and 5.x)."""
        import transformers
        from transformers import LlamaConfig as HFLlamaConfig

        kw = dict(vocab_size=self.vocab_size, hidden_size=self.dim, intermediate_size=self.ffn_dim,
                  num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
                  num_key_value_heads=self.kv_heads, head_dim=self.head_dim, hidden_act="silu",
                  max_position_embeddings=self.max_seq_len, rms_norm_eps=self.norm_eps,
                  tie_word_embeddings=self.tie_embeddings, attention_bias=False, mlp_bias=False,
                  initializer_range=self.init_std,
                  # Image tokens have no BOS/EOS: generation must never stop on token 1 or 2.
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
        if int(transformers.__version__.split(".")[0]) >= 5:
            kw["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        else:
            kw["rope_theta"] = self.rope_theta
        return HFLlamaConfig(**kw)

    @staticmethod
    def from_hf_config(hf) -> "LlamaConfig":
        rp = getattr(hf, "rope_parameters", None) or {}
        theta = rp.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
        return LlamaConfig(vocab_size=hf.vocab_size, dim=hf.hidden_size, n_layers=hf.num_hidden_layers,
                           n_heads=hf.num_attention_heads, n_kv_heads=hf.num_key_value_heads,
                           intermediate_size=hf.intermediate_size, max_seq_len=hf.max_position_embeddings,
                           rope_theta=float(theta), norm_eps=hf.rms_norm_eps,
                           tie_embeddings=bool(hf.tie_word_embeddings), init_std=hf.initializer_range)


# Named sizes; the AR wrapper fills vocab_size (tokenizer codebook) and max_seq_len (text + image).
LLAMA_PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2),  # tests
    "XXS": LlamaConfig(dim=128, n_layers=4, n_heads=4),  # ~1M: minutes on a shared CPU (benches)
    "XS": LlamaConfig(dim=256, n_layers=6, n_heads=4),  # ~5M: trains on a laptop CPU
    "S": LlamaConfig(dim=384, n_layers=8, n_heads=6, n_kv_heads=2),  # ~15M
    "B": LlamaConfig(dim=768, n_layers=12, n_heads=12),  # ~100M, LlamaGen-B's shape
}


def llama_config(name: str, **overrides) -> LlamaConfig:
    if name not in LLAMA_PRESETS:
        raise ValueError(f"unknown Llama size {name!r}; choose one of {sorted(LLAMA_PRESETS)}")
    return replace(LLAMA_PRESETS[name], **overrides)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 and cast back before the gain, exactly as transformers does.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., D)
        return self.weight * xf.to(x.dtype)


def rope_tables(cfg: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: (max_seq_len, head_dim) float32, rotate-half layout (frequencies repeated twice)."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))  # (d/2,)
    freqs = torch.arange(cfg.max_seq_len, dtype=torch.float)[:, None] * inv_freq[None]  # (S, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (S, d)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, d); cos/sin (T, d) -> rotated x."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, d/2) each
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin  # (B, H, T, d)


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """(S, d) -> [-sin_1, sin_2]: with it, rotate_half(x) * sin == [x2, x1] * signed_sin exactly
    (only signs move), so the rotation costs one flip instead of chunk + neg + cat."""
    s1, s2 = sin.chunk(2, dim=-1)
    return torch.cat([-s1, s2], dim=-1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`RMSNorm` as one fused op: in fp32 it is transformers' formula to the last bit; in other
    dtypes the gain is applied after the cast back, as transformers does (F.rms_norm would apply
    it in fp32 and round once, a different result)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    return weight * F.rms_norm(x.float(), weight.shape, eps=eps).to(x.dtype)


@dataclass
class KVCache:
    """Preallocated keys/values, one (B, n_kv_heads, max_len, head_dim) pair per layer.

    Static shapes on the hot path (STYLE habit 6): nothing grows while decoding, so the decode step
    compiles once. Entries are written in place at the given positions."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]

    @staticmethod
    def allocate(cfg: LlamaConfig, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str) -> "KVCache":
        if max_len > cfg.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds max_seq_len {cfg.max_seq_len}")
        shape = (batch, cfg.kv_heads, max_len, cfg.head_dim)
        return KVCache([torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)],
                       [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)])

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        hd, h, kvh = cfg.head_dim, cfg.n_heads, cfg.kv_heads
        self.q_proj = nn.Linear(cfg.dim, h * hd, bias=False)
        self.k_proj = nn.Linear(cfg.dim, kvh * hd, bias=False)
        self.v_proj = nn.Linear(cfg.dim, kvh * hd, bias=False)
        self.o_proj = nn.Linear(h * hd, cfg.dim, bias=False)

    def _qkv(self, x, cos, sin):
        B, T, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)  # (B, H, T, d)
        k = self.k_proj(x).view(B, T, c.kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, T, d)
        v = self.v_proj(x).view(B, T, c.kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, T, d)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _out(self, q, k, v, mask):
        gqa = self.cfg.kv_heads != self.cfg.n_heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)  # (B, H, T, d)
        B, H, T, d = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * d))  # (B, T, D)

    def forward(self, x, cos, sin, mask):
        q, k, v = self._qkv(x, cos, sin)
        return self._out(q, k, v, mask)

    def forward_cached(self, x, cos, sin, mask, k_cache, v_cache, input_pos):
        q, k, v = self._qkv(x, cos, sin)
        k_cache.index_copy_(2, input_pos, k)  # write (B, Hkv, T, d) at positions input_pos
        v_cache.index_copy_(2, input_pos, v)
        return self._out(q, k_cache, v_cache, mask)  # attend over the whole static cache


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, D)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)  # (B, T, D)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_cached(self, x, cos, sin, mask, k_cache, v_cache, input_pos):
        x = x + self.self_attn.forward_cached(self.input_layernorm(x), cos, sin, mask,
                                              k_cache, v_cache, input_pos)  # (B, T, D)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """The trunk (transformers' `model.` prefix)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Llama(nn.Module):
    """Causal LM with transformers-compatible names. Logits come back in the network dtype."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)  # (S, d)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # Residual projections get a depth-scaled init so the residual stream keeps unit scale
        # (after: GPT-2 / nanoGPT).
        for layer in self.model.layers:
            for w in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
                nn.init.normal_(w, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init(self, m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.cfg.init_std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)  # (B, T, D)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm + lm_head on hidden states (B, T, D) -> logits (B, T, V)."""
        return self.lm_head(self.model.norm(h))

    def forward_embeds(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                       bidirectional_from: int | None = None) -> torch.Tensor:
        """Whole-sequence causal pass. x (B, T, D); key_mask (B, T) bool, False = padding that no
        position may attend to. bidirectional_from=P lets rows P.. attend every key (the masked
        "parallel" mode: a causal prefix, then image slots that see each other). Returns final
        hidden states (B, T, D) before the norm."""
        B, T, _ = x.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        if bidirectional_from is not None:
            mask[bidirectional_from:] = True
        mask = mask[None, None]  # (1, 1, T, T)
        if key_mask is not None:
            mask = mask & key_mask[:, None, None, :]  # (B, 1, T, T)
        cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)  # (T, d)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return x

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V); what LlamaForCausalLM(input_ids).logits gives."""
        return self.head(self.forward_embeds(self.embed(input_ids)))

    def forward_cached(self, x: torch.Tensor, input_pos: torch.Tensor, cache: KVCache,
                       key_mask: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """Run new positions against the static cache, module by module. x (B, T, D) at positions
        input_pos (T,) long; key_mask (B, max_len) bool marks cache slots that may ever be attended
        (padding -> False). causal=False lets the new rows attend every valid slot (the masked
        parallel mode). Writes the new keys/values into `cache`; returns hidden states (B, T, D)
        before the norm. This is the plain reading of the maths and the reference that the fused
        decode view (`blinkgen.speed.fused_llama`, what the pipelines run) is tested against."""
        S = cache.max_len
        causal = torch.arange(S, device=x.device)[None, :] <= input_pos[:, None] if causal else \
            torch.ones(len(input_pos), S, dtype=torch.bool, device=x.device)  # (T, S)
        mask = causal[None, None] & key_mask[:, None, None, :]  # (B, 1, T, S)
        cos, sin = self.rope_cos[input_pos].to(x.dtype), self.rope_sin[input_pos].to(x.dtype)  # (T, d)
        for i, layer in enumerate(self.model.layers):
            x = layer.forward_cached(x, cos, sin, mask, cache.k[i], cache.v[i], input_pos)
        return x

    # --- interop -------------------------------------------------------------------------------
    def hf_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Weights under transformers' names, contiguous, on CPU (cast to dtype if given); a tied
        head is stored once."""
        sd = {k: v.detach().cpu().to(dtype or v.dtype).contiguous() for k, v in self.state_dict().items()}
        if self.cfg.tie_embeddings:
            sd.pop("lm_head.weight")
        return sd

    def hf_files(self, dtype: torch.dtype | None = None) -> dict:
        """{relative file -> content} of a folder `LlamaForCausalLM.from_pretrained` loads:
        transformers' config.json + model.safetensors (feed to modelio.write_folder_atomic)."""
        sd = self.hf_state_dict(dtype)
        hf = self.cfg.to_hf_config().to_dict()
        hf["architectures"] = ["LlamaForCausalLM"]
        hf["blinkgen_llama"] = self.cfg.to_dict()  # our exact config, for a lossless round trip
        hf["torch_dtype"] = hf["dtype"] = str(sd["model.norm.weight"].dtype).removeprefix("torch.")
        return {"config.json": hf, "model.safetensors": sd}

    @staticmethod
    def untie(cfg: LlamaConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A stored tied checkpoint lacks lm_head.weight; give it back for load_state_dict."""
        if cfg.tie_embeddings and "lm_head.weight" not in tensors:
            return {**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"]}
        return tensors

    @staticmethod
    def from_hf_files(config: dict, tensors: dict[str, torch.Tensor]) -> "Llama":
        """Inverse of `hf_files` (also accepts a plain transformers Llama config dict)."""
        if "blinkgen_llama" in config:
            cfg = LlamaConfig.from_dict(config["blinkgen_llama"])
        else:
            from transformers import LlamaConfig as HFLlamaConfig

            cfg = LlamaConfig.from_hf_config(HFLlamaConfig.from_dict(config))
        m = Llama(cfg)
        tensors = Llama.untie(cfg, tensors)
        missing, unexpected = m.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ValueError(f"Llama weights do not match the config: missing={missing[:5]} "
                             f"unexpected={unexpected[:5]}")
        return m
