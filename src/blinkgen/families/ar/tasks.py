"""The AR family's training tasks (the protocol: train/task.py): the FSQ tokenizer, then the
Llama's next-token (causal) or masked-slot (parallel mode) objective over pre-tokenized images."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from ...errors import UserInputError
from ...modelio import write_folder_atomic
from ...models.ar_t2i import ar_config, fit_text
from ...models.autoencoder import psnr, to_pixels, to_uint8
from ...models.llama import LLAMA_PRESETS
from ...models.masked_t2i import random_masking
from ...models.tokenizer import TOKENIZER_PRESETS, FSQTokenizer
from ...pipeline import requests
from ...precision import dtype_of
from ...train.captions import CaptionTable, encode_captions
from ...train.task import Task
from .folder import DEFAULT_GUIDANCE, find_tokenizer, load_tokenizer, model_class, save_ar_folder, tokenizer_files
from .pipeline import ARPipeline


class TokenizerTask(Task):
    """Trains the FSQ tokenizer (reconstruction only); --preset names a TOKENIZER_PRESETS entry."""

    def __init__(self, cfg, train, val, device):
        if cfg.preset not in TOKENIZER_PRESETS:
            raise UserInputError(f"unknown tokenizer preset {cfg.preset!r}; choose from {sorted(TOKENIZER_PRESETS)}")
        self.cfg, self.device = cfg, device
        self.model = FSQTokenizer(replace(TOKENIZER_PRESETS[cfg.preset], image_size=cfg.size))
        self.images, self.val_images = train.images.to(device), val.images.to(device)
        self.n_train = len(train)

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {}  # reconstruction has no randomness

    def loss(self, model, idx, rnd):
        return model(to_pixels(self.images[idx]))

    @torch.no_grad()
    def _reconstruct(self, tok, images):
        parts = [tok.decode(tok.encode_uint8(images[i:i + 128])) for i in range(0, len(images), 128)]
        return to_uint8(torch.cat(parts)).cpu()

    @torch.no_grad()
    def validate(self, ema) -> dict:
        rec = self._reconstruct(ema, self.val_images)
        p = psnr(rec, self.val_images.cpu())
        usage = ema.codebook_usage(ema.encode_uint8(self.val_images[:512]))
        return {"val_loss": -p, "val_psnr": p, "codebook_usage": usage}

    @torch.no_grad()
    def samples(self, ema, step):
        from ...pngmeta import grid

        x = self.val_images[:16]
        rec = self._reconstruct(ema, x)
        ims = [Image.fromarray(t.permute(1, 2, 0).cpu().numpy()) for pair in zip(x, rec) for t in pair]
        return grid(ims, cols=8)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return write_folder_atomic(folder, tokenizer_files(ema, dtype_of(self.cfg.save_dtype), extra))


class ARTask(Task):
    """Next-token training of the Llama over pre-tokenized images, with caption dropout for CFG.
    Needs a trained tokenizer (cfg.autoencoder: a tokenizer, tokenizer run or AR model folder)."""

    objective = "causal"

    def __init__(self, cfg, train, val, device):
        if cfg.preset not in LLAMA_PRESETS:
            raise UserInputError(f"unknown AR preset {cfg.preset!r}; choose from {sorted(LLAMA_PRESETS)}")
        if not cfg.autoencoder:
            raise UserInputError("the ar family needs a trained tokenizer folder (autoencoder=...)")
        self.cfg, self.device = cfg, device
        tok = load_tokenizer(find_tokenizer(cfg.autoencoder), device)
        if tok.cfg.image_size != cfg.size:
            raise UserInputError(f"the tokenizer was trained on {tok.cfg.image_size}px images, not {cfg.size}px")
        arcfg = ar_config(cfg.preset, tok.cfg, cond_drop=cfg.caption_dropout, objective=self.objective)
        self.model = model_class(arcfg)(arcfg, tok)
        self._prepare(tok, train, val)

    def _prepare(self, tok, train, val) -> None:
        """Both sets as token grids (the frozen tokenizer tok), the caption table and its encodings."""
        cfg, device = self.cfg, self.device
        self.tokens = self._tokenize(tok, train.images)  # (N, n_tokens)
        self.val_tokens = self._tokenize(tok, val.images)
        self.n_train = len(train)
        # plain captions only (no style phrases): every caption of train and val, encoded once
        self.captions = CaptionTable(train.captions, None, [c for caps in val.captions for c in caps]).to(device)
        states, mask = fit_text(encode_captions(self.captions.strings, device), self.text_len)
        self.states, self.mask = states.to(device, torch.float16), mask.to(device)  # (U, T, 384), (U, T)
        self.val_cap = torch.tensor([self.captions.pos[c[0]] for c in val.captions], device=device)
        self.val_prompts = [c[0] for c in val.captions]

    @property
    def text_len(self) -> int:
        return self.model.cfg.text_len

    @torch.no_grad()
    def _tokenize(self, tok, images):
        return torch.cat([tok.encode_uint8(images[i:i + 256]) for i in range(0, len(images), 256)])

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {"u": torch.rand((B,), generator=g), "drop": torch.rand((B,), generator=g)}

    def _captions(self, idx, rnd) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's caption per image (one of its captions, drawn by rnd["u"]) as encoder
        states (b, T, 384) and mask (b, T), and the caption-drop flags (b,) for CFG."""
        dev = self.device
        cid = self.captions.draw(idx, rnd["u"].to(dev))
        drop = rnd["drop"].to(dev) < self.cfg.caption_dropout
        return self.states[cid].float(), self.mask[cid], drop

    def loss(self, model, idx, rnd):
        return model(self.tokens[idx], *self._captions(idx, rnd))

    @torch.no_grad()
    def validate(self, ema) -> dict:
        ce, correct, n = 0.0, 0, 0
        for i in range(0, len(self.val_tokens), 128):
            t, c = self.val_tokens[i:i + 128], self.val_cap[i:i + 128]
            logits = ema.logits(t, self.states[c].float(), self.mask[c]).float()  # (b, N, V)
            ce += torch.nn.functional.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="sum").item()
            correct += (logits.argmax(-1) == t).sum().item()
            n += t.numel()
        return {"val_loss": ce / n, "val_token_acc": correct / n}

    def pipeline(self, ema) -> ARPipeline:
        return ARPipeline(ema, {}, name="ar-training", device=self.device)

    @torch.no_grad()
    def samples(self, ema, step):
        from ...pngmeta import grid

        prompts = (self.cfg.sample_prompts or self.val_prompts)[:16]
        pipe = self.pipeline(ema)
        ims = pipe.sample(requests(prompts, list(range(len(prompts)))), pipe.settings(guidance=DEFAULT_GUIDANCE)).images
        return grid(ims, cols=8)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_ar_folder(folder, ema, extra, dtype=dtype_of(self.cfg.save_dtype))


class MaskedARTask(ARTask):
    """The parallel mode's training (models/masked_t2i.py): the same data, captions and caption
    dropout as ARTask, but each sample hides a cosine-distributed share of its slots and the loss
    is cross-entropy on those. Validation hides a fixed draw (seed 0), so its numbers compare
    across steps and runs."""

    objective = "masked"

    def __init__(self, cfg, train, val, device):
        super().__init__(cfg, train, val, device)
        g = torch.Generator().manual_seed(0)
        n, N = self.val_tokens.shape
        self.val_masked = random_masking(torch.rand(n, generator=g), torch.rand(n, N, generator=g)).to(device)

    def draw(self, g: torch.Generator, B: int) -> dict:
        N = self.tokens.shape[1]
        return {**super().draw(g, B), "ratio": torch.rand((B,), generator=g), "order": torch.rand((B, N), generator=g)}

    def loss(self, model, idx, rnd):
        masked = random_masking(rnd["ratio"], rnd["order"]).to(self.device)  # (b, N)
        return model(self.tokens[idx], *self._captions(idx, rnd), masked)

    @torch.no_grad()
    def validate(self, ema) -> dict:
        ce, correct, n = 0.0, 0, 0
        for i in range(0, len(self.val_tokens), 128):
            t, c, m = self.val_tokens[i:i + 128], self.val_cap[i:i + 128], self.val_masked[i:i + 128]
            logits = ema.logits(t, self.states[c].float(), self.mask[c], m)[m].float()  # (masked, V)
            ce += torch.nn.functional.cross_entropy(logits, t[m], reduction="sum").item()
            correct += (logits.argmax(-1) == t[m]).sum().item()
            n += int(m.sum())
        return {"val_loss": ce / n, "val_token_acc": correct / n}
