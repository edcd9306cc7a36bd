"""The parallel ("MaskGIT-style") mode of the LLM family: the same Llama, the same prefix, but
image tokens are predicted all at once from a partly masked canvas and filled in over K passes.

Why (after: MaskGIT, Chang et al. 2022; Muse): next-token decoding costs one network call per
token (64 here), each reading every weight for one row of work. Masked prediction costs K calls
(8-16) over all image slots at once, so at batch 1 a CPU does far fewer weight reads for the
same image; at large batch the extra rows make it compute-bound and plain decoding wins back.
bench/bench_maskgit.py measures where the crossover is, and at what quality.

Attention: the text prefix + BOI stays causal (exactly the AR model's prefix, so its keys and
values are computed once per image and cached); image slots attend every valid key, themselves
included. Masked slots carry a learned [MASK] embedding; every other slot its token's embedding.
The checkpoint layout is the AR model's plus one vector (`mask_emb`), and the Llama folder still
loads in `transformers` (its causal forward is not this model's, which the config says).

Training: per sample, a mask ratio r = cos(pi/2 * u) with u ~ U(0, 1) (MaskGIT's cosine
schedule) picks ceil(r * N) random slots; the loss is cross-entropy on the masked slots only.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ar_t2i import ARConfig, ARTextToImage, fit_text
from .tokenizer import FSQTokenizer


def random_masking(u_ratio: torch.Tensor, u_order: torch.Tensor) -> torch.Tensor:
    """u_ratio (B,), u_order (B, N) uniforms -> masked (B, N) bool with ceil(cos(pi/2 u) N) True
    (at least one) per row, at the slots where u_order is smallest: a pure function of its draws."""
    N = u_order.shape[1]
    n = torch.ceil(torch.cos(u_ratio * math.pi / 2) * N).long().clamp(1, N)  # (B,)
    rank = u_order.argsort(dim=1).argsort(dim=1)  # (B, N): 0 = smallest draw
    return rank < n[:, None]


class MaskedTextToImage(ARTextToImage):
    """ARTextToImage trained to fill masked slots (see the module docstring)."""

    def __init__(self, cfg: ARConfig, tokenizer: FSQTokenizer | None = None):
        if cfg.objective != "masked":
            raise ValueError("MaskedTextToImage needs an ARConfig with objective='masked'")
        super().__init__(cfg, tokenizer)
        self.mask_emb = nn.Parameter(torch.randn(cfg.llama.dim) * cfg.llama.init_std)

    def image_embeds(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """tokens (B, N) long (any value where masked), masked (B, N) bool -> (B, N, D)."""
        e = self.llama.embed(tokens.clamp(0, self.cfg.llama.vocab_size - 1))  # (B, N, D)
        return torch.where(masked[..., None], self.mask_emb.to(e.dtype), e)

    def logits(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
               masked: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for every image slot (B, N, V) given the canvas `tokens` with `masked` slots
        hidden (default: all hidden, the first sampling pass)."""
        B, N = tokens.shape
        if masked is None:
            masked = torch.ones_like(tokens, dtype=torch.bool)
        pre, pre_mask = self.prefix(states, mask)  # (B, P, D), (B, P)
        x = torch.cat([pre, self.image_embeds(tokens, masked)], dim=1)  # (B, P + N, D)
        key_mask = torch.cat([pre_mask, pre_mask.new_ones(B, N)], dim=1)  # (B, P + N)
        h = self.llama.forward_embeds(x, key_mask, bidirectional_from=self.cfg.prefix_len)
        return self.llama.head(h[:, self.cfg.prefix_len:])  # (B, N, V)

    def forward(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                drop: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training loss: cross-entropy on the masked slots (B, N) bool; rows with drop (B,)
        True see the learned null caption (for classifier-free guidance)."""
        B = tokens.shape[0]
        states, mask = states.to(self.null_text.dtype), mask.to(torch.bool)
        ns, nm = self.null_condition(B)
        states = torch.where(drop[:, None, None], ns, states)  # (B, T, 384)
        mask = torch.where(drop[:, None], nm, mask)  # (B, T)
        logits = self.logits(tokens, states, mask, masked)  # (B, N, V)
        loss = F.cross_entropy(logits[masked].float(), tokens[masked])
        return loss, {"ce": loss.detach(), "mask_ratio": masked.float().mean()}

    def training_loss(self, images_uint8: torch.Tensor, text, generator: torch.Generator | None = None):
        dev = self.boi.device
        tokens = self.tokenizer.encode_uint8(images_uint8.to(dev))  # (B, N)
        states, mask = fit_text(text, self.cfg.text_len)
        B, N = tokens.shape
        gdev = generator.device if generator is not None else "cpu"
        drop = torch.rand(B, generator=generator, device=gdev) < self.cfg.cond_drop  # (B,)
        masked = random_masking(torch.rand(B, generator=generator, device=gdev),
                                torch.rand(B, N, generator=generator, device=gdev))
        return self(tokens, states.to(dev), mask.to(dev), drop.to(dev), masked.to(dev))
