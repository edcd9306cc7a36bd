"""A generative captioner: a small Llama writes a caption after a prefix of image features.

Sequence: [P image tokens][<bos>][w_1 ... w_n][<eos>]. The image tokens come from two sources:
- a frozen image encoder (blinkgen's contrastive evaluator, models/clip.py): its text-aligned
  embedding (1 token: what the picture is, which names an emoji) and its 4x4 stage map (16 tokens);
- a small learned convolutional stem on the pixels (`pixel_channels`: three stride-2 convolutions
  to an 8x8 map, whose 2x2 cells are then stacked into channels: 16 tokens, none of the map lost,
  and a prefix a quarter as long as 64 tokens would be -- the decoder's cost grows with it). Measured on held-out shapes scenes, the frozen features alone told
  circle from square in only 67% of images and got 60% of scenes right (bench/RESULTS.md,
  "Captioner"): they were trained to rank captions, not to keep every shape and colour apart.
Each group has its own linear projection into the Llama's width, and every prefix slot a learned
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
    """feature_dims / feature_tokens: channels and token count of each frozen-feature group, in
    order. pixel_channels: widths of the learned stem's stride-2 convolutions ([] = no stem);
    image_size: the side of the images it reads. max_text: most words a caption may have (the
    sequence also holds <bos> and <eos>)."""

    vocab_size: int
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    feature_dims: list[int] = field(default_factory=lambda: [384, 192])
    feature_tokens: list[int] = field(default_factory=lambda: [1, 16])
    pixel_channels: list[int] = field(default_factory=lambda: [32, 64, 96])
    pixel_merge: int = 2  # the stem's map is read in merge x merge cells (space to depth)
    image_size: int = 64
    max_text: int = 32

    @property
    def pixel_tokens(self) -> int:
        if not self.pixel_channels:
            return 0
        return (self.image_size // 2 ** len(self.pixel_channels) // self.pixel_merge) ** 2

    @property
    def prefix_len(self) -> int:
        return sum(self.feature_tokens) + self.pixel_tokens

    def llama(self) -> LlamaConfig:
        return LlamaConfig(vocab_size=self.vocab_size, dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads,
                           max_seq_len=self.prefix_len + self.max_text + 2, tie_embeddings=True)

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes (the width/depth part; vocab_size comes from the data).
CAPTIONER_PRESETS: dict[str, dict] = {
    "tiny": dict(dim=32, n_layers=1, n_heads=2, pixel_channels=[8, 8, 8]),  # tests
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
        layers, cin = [], 3
        for c in cfg.pixel_channels:
            layers += [nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.GELU()]
            cin = c
        self.stem = nn.Sequential(*layers)  # (B, 3, S, S) -> (B, C, S/8, S/8)
        self.stem_proj = nn.Linear(cin * cfg.pixel_merge ** 2, cfg.dim) if cfg.pixel_channels else None
        self.slot = nn.Parameter(torch.randn(cfg.prefix_len, cfg.dim) * 0.02)  # which group and cell

    def prefix(self, features: list[torch.Tensor], images: torch.Tensor | None) -> torch.Tensor:
        """features[g]: (B, feature_tokens[g], feature_dims[g]) frozen features; images (B, 3, S, S)
        uint8 for the pixel stem (None when the config has none) -> prefix embeddings (B, P, D)."""
        dt = self.slot.dtype
        parts = [p(f.to(dt)) for p, f in zip(self.proj, features)]  # each (B, T_g, D)
        if self.stem_proj is not None:
            x = images.to(dt) / 127.5 - 1.0  # (B, 3, S, S) in [-1, 1]
            h = F.pixel_unshuffle(self.stem(x), self.cfg.pixel_merge)  # (B, C*m*m, S/8/m, S/8/m)
            parts.append(self.stem_proj(h.flatten(2).transpose(1, 2)))  # (B, pixel_tokens, D)
        return torch.cat(parts, dim=1) + self.slot  # (B, P, D)

    def logits(self, features: list[torch.Tensor], images: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits. tokens (B, T) = <bos> w_1 .. <eos> <pad>..; returns (B, T-1, V),
        row i predicting tokens[:, i+1]."""
        pre = self.prefix(features, images)  # (B, P, D)
        x = torch.cat([pre, self.llama.embed(tokens[:, :-1])], dim=1)  # (B, P + T - 1, D)
        h = self.llama.forward_embeds(x)  # (B, P + T - 1, D), causal
        return self.llama.head(h[:, self.cfg.prefix_len:])  # (B, T - 1, V)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None, tokens: torch.Tensor,
                pad: int) -> tuple[torch.Tensor, dict]:
        """The training loss: next-word cross-entropy over the real words and <eos> (padding
        ignored). Returns (loss, logs)."""
        logits = self.logits(features, images, tokens)  # (B, T-1, V)
        target = tokens[:, 1:].masked_fill(tokens[:, 1:] == pad, IGNORE)  # (B, T-1)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE)
        return loss, {"ce": loss.detach()}


def flatten_features(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Encoder outputs -> prefix groups: a (B, C) vector -> (B, 1, C); a (B, C, h, w) map ->
    (B, h*w, C), row-major cells."""
    return [m[:, None] if m.dim() == 2 else m.flatten(2).transpose(1, 2) for m in maps]
