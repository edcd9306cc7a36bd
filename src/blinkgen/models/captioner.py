"""A generative captioner: a small Llama writes a caption after a prefix of image features.

Sequence: [P projected image-feature tokens][<bos>][w_1 ... w_n][<eos>]. The features come from a
frozen image encoder (blinkgen's contrastive evaluator, models/clip.py): its text-aligned
embedding (1 token), and its 4x4 and 8x8 stage maps (16 + 64 tokens) for where things are. Each
feature group has its own linear projection into the Llama's width, and every prefix slot a learned
embedding saying which group and cell it is (RoPE alone says only how far apart two slots are).
The decoder is models/llama.py's Llama, so training runs `forward_embeds` and decoding the static
KV cache (`forward_cached`), as in the AR family. (after: ClipCap, Mokady et al. 2021 -- image
features as a language model's prefix.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .llama import Llama, LlamaConfig

IGNORE = -100  # F.cross_entropy's ignore_index: padding after <eos> carries no loss


@dataclass
class CaptionerConfig:
    """feature_dims / feature_tokens: channels and token count of each prefix group, in order.
    max_text: most words a caption may have (the sequence also holds <bos> and <eos>)."""

    vocab_size: int
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    feature_dims: list[int] = field(default_factory=lambda: [384, 192, 128])
    feature_tokens: list[int] = field(default_factory=lambda: [1, 16, 64])
    max_text: int = 32

    @property
    def prefix_len(self) -> int:
        return sum(self.feature_tokens)

    def llama(self) -> LlamaConfig:
        return LlamaConfig(vocab_size=self.vocab_size, dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads,
                           max_seq_len=self.prefix_len + self.max_text + 2, tie_embeddings=True)

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes (the width/depth part; vocab_size comes from the data).
CAPTIONER_PRESETS: dict[str, dict] = {
    "tiny": dict(dim=32, n_layers=1, n_heads=2),  # tests
    "S": dict(dim=128, n_layers=4, n_heads=4),  # the shipped one: ~1.2M parameters with 2k words
}


def captioner_config(preset: str, vocab_size: int, **kw) -> CaptionerConfig:
    if preset not in CAPTIONER_PRESETS:
        raise ValueError(f"unknown captioner preset {preset!r}; choose one of {sorted(CAPTIONER_PRESETS)}")
    return replace(CaptionerConfig(vocab_size=vocab_size), **CAPTIONER_PRESETS[preset], **kw)


class Captioner(nn.Module):
    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        if len(cfg.feature_dims) != len(cfg.feature_tokens):
            raise ValueError("feature_dims and feature_tokens must have one entry per feature group")
        self.cfg = cfg
        self.llama = Llama(cfg.llama())
        self.proj = nn.ModuleList(nn.Linear(c, cfg.dim) for c in cfg.feature_dims)
        self.slot = nn.Parameter(torch.randn(cfg.prefix_len, cfg.dim) * 0.02)  # which group and cell

    def prefix(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features[g]: (B, feature_tokens[g], feature_dims[g]) -> prefix embeddings (B, P, D)."""
        parts = [p(f.to(self.slot.dtype)) for p, f in zip(self.proj, features)]  # each (B, T_g, D)
        return torch.cat(parts, dim=1) + self.slot  # (B, P, D)

    def logits(self, features: list[torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits. tokens (B, T) = <bos> w_1 .. <eos> <pad>..; returns (B, T-1, V),
        row i predicting tokens[:, i+1]."""
        pre = self.prefix(features)  # (B, P, D)
        x = torch.cat([pre, self.llama.embed(tokens[:, :-1])], dim=1)  # (B, P + T - 1, D)
        h = self.llama.forward_embeds(x)  # (B, P + T - 1, D), causal
        return self.llama.head(h[:, self.cfg.prefix_len:])  # (B, T - 1, V)

    def forward(self, features: list[torch.Tensor], tokens: torch.Tensor, pad: int) -> tuple[torch.Tensor, dict]:
        """The training loss: next-word cross-entropy over the real words and <eos> (padding
        ignored). Returns (loss, logs)."""
        logits = self.logits(features, tokens)  # (B, T-1, V)
        target = tokens[:, 1:].masked_fill(tokens[:, 1:] == pad, IGNORE)  # (B, T-1)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE)
        return loss, {"ce": loss.detach()}


def flatten_features(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Encoder outputs -> prefix groups: a (B, C) vector -> (B, 1, C); a (B, C, h, w) map ->
    (B, h*w, C), row-major cells."""
    return [m[:, None] if m.dim() == 2 else m.flatten(2).transpose(1, 2) for m in maps]
