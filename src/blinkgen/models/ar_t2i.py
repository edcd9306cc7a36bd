"""Text-to-image as language modelling: [text prefix][BOI][image tokens] through a Llama.

Why this design (after: LlamaGen's T5-prefix text-to-image): the frozen MiniLM's per-token states
(B, L, 384) are mapped by a small MLP into the Llama's embedding space and used as prefix
embeddings; a learned begin-of-image (BOI) embedding follows, whose output predicts image token 0;
image token i's output predicts token i+1. The prefix is always padded to `text_len` slots, and
padding slots are masked as keys, so every image token sits at the same position whatever the
prompt length, and a sample never depends on its batch-mates' prompts.

Classifier-free guidance: a learned null condition (text_len, 384) with an all-valid mask replaces
the caption with probability `cond_drop` in training; sampling runs [cond; null] as one batch.

The tokenizer is a frozen submodule: trained first, then only encodes images for the loss and
decodes tokens to pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..text.encoder import DEFAULT_MAX_TOKENS, TEXT_DIM, TextBatch
from .autoencoder import to_uint8
from .llama import Llama, LlamaConfig, llama_config
from .tokenizer import TOKENIZER_PRESETS, FSQTokenizer, TokenizerConfig


@dataclass
class ARConfig:
    llama: LlamaConfig  # resolved: vocab_size = codebook size, max_seq_len = text_len + 1 + tokens
    tokenizer: TokenizerConfig
    text_len: int = DEFAULT_MAX_TOKENS
    text_dim: int = TEXT_DIM
    cond_drop: float = 0.1  # LlamaGen's caption drop rate for CFG
    objective: str = "causal"  # "causal": next-token; "masked": parallel mode (masked_t2i.py)

    def __post_init__(self):
        if self.objective not in ("causal", "masked"):
            raise ValueError(f"objective must be 'causal' or 'masked', got {self.objective!r}")

    @property
    def prefix_len(self) -> int:
        return self.text_len + 1  # text slots + BOI

    @property
    def n_tokens(self) -> int:
        return self.tokenizer.n_tokens

    def to_dict(self) -> dict:
        return {"llama": self.llama.to_dict(), "tokenizer": self.tokenizer.to_dict(),
                "text_len": self.text_len, "text_dim": self.text_dim, "cond_drop": self.cond_drop,
                "objective": self.objective}

    @staticmethod
    def from_dict(d: dict) -> "ARConfig":
        return ARConfig(llama=LlamaConfig.from_dict(d["llama"]),
                        tokenizer=TokenizerConfig.from_dict(d["tokenizer"]),
                        text_len=d["text_len"], text_dim=d["text_dim"], cond_drop=d["cond_drop"],
                        objective=d.get("objective", "causal"))


def ar_config(size: str = "S", tokenizer: str | TokenizerConfig = "S",
              text_len: int = DEFAULT_MAX_TOKENS, **kw) -> ARConfig:
    """Named Llama size + named (or given) tokenizer -> a consistent ARConfig."""
    if isinstance(tokenizer, str) and tokenizer not in TOKENIZER_PRESETS:
        raise ValueError(f"unknown tokenizer preset {tokenizer!r}; choose one of {sorted(TOKENIZER_PRESETS)}")
    tok = TOKENIZER_PRESETS[tokenizer] if isinstance(tokenizer, str) else tokenizer
    lcfg = llama_config(size, vocab_size=tok.codebook_size, max_seq_len=text_len + 1 + tok.n_tokens)
    return ARConfig(llama=lcfg, tokenizer=replace(tok), text_len=text_len, **kw)


def fit_text(text: TextBatch, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (or cut) encoder output to exactly text_len slots: states (B, T, 384), mask (B, T)."""
    s, m = text.states, text.mask
    L = s.shape[1]
    if L >= text_len:
        return s[:, :text_len], m[:, :text_len]
    return F.pad(s, (0, 0, 0, text_len - L)), F.pad(m, (0, text_len - L), value=False)


class ARTextToImage(nn.Module):
    def __init__(self, cfg: ARConfig, tokenizer: FSQTokenizer | None = None):
        super().__init__()
        if cfg.llama.vocab_size != cfg.tokenizer.codebook_size:
            raise ValueError("llama vocab_size must equal the tokenizer codebook size")
        if cfg.llama.max_seq_len < cfg.prefix_len + cfg.n_tokens - 1:
            raise ValueError("llama max_seq_len is too short for text_len + 1 + image tokens")
        self.cfg = cfg
        D = cfg.llama.dim
        self.llama = Llama(cfg.llama)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, D), nn.GELU(approximate="tanh"),
                                       nn.Linear(D, D))
        # Learned null caption, in the encoder's space so it passes through the same MLP.
        self.null_text = nn.Parameter(torch.randn(cfg.text_len, cfg.text_dim) / cfg.text_dim**0.5)
        self.boi = nn.Parameter(torch.randn(D) * cfg.llama.init_std)
        self.tokenizer = tokenizer if tokenizer is not None else FSQTokenizer(cfg.tokenizer)
        self.tokenizer.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: never in training mode
        return self

    def trainable_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("tokenizer.")]

    @property
    def dtype(self) -> torch.dtype:
        return self.boi.dtype

    # --- conditioning ------------------------------------------------------------------------
    def null_condition(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.null_text[None].expand(batch, -1, -1)  # (B, T, 384)
        return states, torch.ones(batch, self.cfg.text_len, dtype=torch.bool, device=states.device)

    def prefix(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (B, T, 384), mask (B, T) -> prefix embeddings (B, T+1, D), key mask (B, T+1)."""
        B = states.shape[0]
        emb = self.text_proj(states.to(self.dtype)) * mask[..., None].to(self.dtype)  # (B, T, D)
        boi = self.boi[None, None].expand(B, 1, -1)  # (B, 1, D)
        ones = mask.new_ones(B, 1)
        return torch.cat([emb, boi], dim=1), torch.cat([mask, ones], dim=1)

    def conditioning(self, text: TextBatch, cfg: bool, uncond: TextBatch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix for sampling: (B, P, D) or, under CFG, [cond; uncond] as (2B, P, D), where
        uncond is the learned null condition, or the encoded `uncond` prompts (B rows: a negative
        prompt) when given."""
        dev = self.boi.device
        states, mask = fit_text(text, self.cfg.text_len)
        states, mask = states.to(dev), mask.to(dev)
        if cfg:
            if uncond is None:
                ns, nm = self.null_condition(states.shape[0])
            else:
                ns, nm = fit_text(uncond, self.cfg.text_len)
                ns, nm = ns.to(dev, self.null_text.dtype), nm.to(dev)
            states, mask = torch.cat([states.to(ns.dtype), ns]), torch.cat([mask, nm])
        return self.prefix(states, mask)

    # --- training ----------------------------------------------------------------------------
    def logits(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits. tokens (B, N); states (B, T, 384); mask (B, T) -> (B, N, V),
        row i predicting token i (the BOI position predicts token 0)."""
        B, N = tokens.shape
        pre, pre_mask = self.prefix(states, mask)  # (B, P, D), (B, P)
        x = torch.cat([pre, self.llama.embed(tokens[:, :-1])], dim=1)  # (B, P + N - 1, D)
        key_mask = torch.cat([pre_mask, pre_mask.new_ones(B, N - 1)], dim=1)  # (B, P + N - 1)
        h = self.llama.forward_embeds(x, key_mask)  # (B, P + N - 1, D)
        return self.llama.head(h[:, self.cfg.prefix_len - 1:])  # (B, N, V)

    def forward(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                drop: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training loss (forward is the loss so DDP wrappers see the whole computation):
        next-token cross-entropy; rows with drop (B,) True see the learned null caption."""
        B = tokens.shape[0]
        states, mask = states.to(self.null_text.dtype), mask.to(torch.bool)
        ns, nm = self.null_condition(B)
        states = torch.where(drop[:, None, None], ns, states)  # (B, T, 384)
        mask = torch.where(drop[:, None], nm, mask)  # (B, T)
        logits = self.logits(tokens, states, mask)  # (B, N, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        return loss, {"ce": loss.detach(), "cond_dropped": drop.float().mean()}

    def training_loss(self, images_uint8: torch.Tensor, text: TextBatch,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """From pixels and encoder output: tokenize with the frozen tokenizer, draw the caption
        drop from `generator` (so the loss is a function of weights, batch and step seed only)."""
        dev = self.boi.device
        tokens = self.tokenizer.encode_uint8(images_uint8.to(dev))  # (B, N)
        states, mask = fit_text(text, self.cfg.text_len)
        gdev = generator.device if generator is not None else "cpu"
        drop = torch.rand(tokens.shape[0], generator=generator, device=gdev) < self.cfg.cond_drop  # (B,)
        return self(tokens, states.to(dev), mask.to(dev), drop.to(dev))

    @torch.inference_mode()
    def tokens_to_images(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N) -> uint8 images (B, 3, H, W) on CPU."""
        return to_uint8(self.tokenizer.decode(tokens).float()).cpu()
