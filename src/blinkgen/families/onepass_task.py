"""The training setup the one-pass families (gan, vae) share, on the one loop's task protocol
(train/task.py): the data in the model's image space, the caption table with style phrases, the
cached MiniLM encodings, the held-out prompts, and the export with the model's styles.

Family presets are plain dicts (families/gan/folder.py, families/vae/folder.py) with at least
"space": "pixel" | "latent". A latent preset needs `--autoencoder` (an AutoencoderKL folder, a
diffusion model folder such as src/blinkgen/weights/default, or an autoencoder run); its latents
are encoded once, before training. Pixel data stay uint8 in memory and are converted per batch.
"""
from __future__ import annotations

import torch

from ..data.types import ImageCaptionSet
from ..errors import UserInputError
from ..models.autoencoder import to_pixels
from ..pngmeta import grid
from ..pipeline import requests
from ..text.encoder import TextBatch
from ..train.captions import CaptionTable, encode_captions, styled
from ..train.task import Task, fused_ok
from .diffusion.folder import find_autoencoder, load_autoencoder
from .onepass import ImageSpace

SAMPLE_GRID = 16  # prompts in a run's periodic sample grid


class OnePassTask(Task):
    """Subclasses build `self.model` after calling this __init__, and implement the losses,
    validate, `pipeline(ema)` and `export`."""

    family = ""

    def __init__(self, cfg, train: ImageCaptionSet, val: ImageCaptionSet, device, presets: dict):
        if cfg.preset not in presets:
            raise UserInputError(f"unknown {self.family} preset {cfg.preset!r}; choose from {sorted(presets)}")
        self.cfg, self.device = cfg, device
        self.preset = presets[cfg.preset]
        ae = None
        if self.preset["space"] == "latent":
            if not cfg.autoencoder:
                raise UserInputError(f"{self.family} preset {cfg.preset!r} works in AutoencoderKL latents: pass "
                                     "--autoencoder (an autoencoder folder or a diffusion model folder)")
            ae = load_autoencoder(find_autoencoder(cfg.autoencoder), device)
        self.space = ImageSpace(cfg.size, ae)
        self.n_train = len(train)
        self.data = self._stored(train.images)  # uint8 pixels or float latents, on the device
        self.val_data = self._stored(val.images)
        self.val_images = val.images  # (V, 3, H, W) uint8 on the CPU, for validation metrics
        val_styles = val.style_list()
        self.val_prompts = [styled(c[0], s) if cfg.style_prob > 0 else c[0] for c, s in zip(val.captions, val_styles)]
        # "" (the diffusion family's null prompt) is never drawn here; listing it makes the table the
        # diffusion task's for the same data, so both share one cached encoding (25k captions)
        self.captions = CaptionTable(train.captions, train.styles, ["", *self.val_prompts]).to(device)
        tb = encode_captions(self.captions.strings, device)
        self.states = tb.states.to(device, torch.float16)  # (U, L, 384): half the memory of fp32
        self.mask = tb.mask.to(device)
        self.pooled = tb.pooled.to(device)
        self.val_cap = torch.tensor([self.captions.pos[p] for p in self.val_prompts], device=device)

    def _stored(self, images: torch.Tensor) -> torch.Tensor:
        if self.space.ae is None:
            return images.to(self.device)  # uint8: a float copy of 9k 64 px images would be 450 MB
        return self.space.encode(images.to(self.device))

    def batch(self, idx: torch.Tensor, val: bool = False) -> torch.Tensor:
        """(b, channels, side, side) float32 data of images idx, in the model's space."""
        x = (self.val_data if val else self.data)[idx]
        return to_pixels(x) if self.space.ae is None else x

    def text(self, cid: torch.Tensor) -> TextBatch:
        """Caption ids (b,) -> their cached encodings (states float32)."""
        return TextBatch(self.states[cid].float(), self.mask[cid], self.pooled[cid])

    def draw_caption_uniforms(self, g: torch.Generator, B: int) -> dict:
        return {"u": torch.rand((B,), generator=g), "u_style": torch.rand((B,), generator=g),
                "u_pick": torch.rand((B,), generator=g)}

    def caption_ids(self, idx: torch.Tensor, rnd: dict) -> torch.Tensor:
        """One caption per image (b,): a random one of its captions, styled with probability
        cfg.style_prob. The one-pass families have no guidance, so captions are never dropped."""
        dev = self.device
        return self.captions.draw(idx, rnd["u"].to(dev), rnd["u_style"].to(dev), rnd["u_pick"].to(dev),
                                  self.cfg.style_prob)

    def adam(self, params, betas=(0.9, 0.99), lr_scale: float = 1.0) -> torch.optim.AdamW:
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, betas=betas, weight_decay=self.cfg.weight_decay,
                                fused=fused_ok(self.device))
        if lr_scale != 1.0:
            for gp in opt.param_groups:
                gp["lr_scale"] = lr_scale
        return opt

    def pipeline(self, ema):  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def generate_val(self, ema, n: int | None = None) -> list:
        """The EMA model's images for the first n held-out prompts, seeds 0..n-1 (PIL list)."""
        prompts = self.val_prompts[:n] if n else self.val_prompts
        pipe = self.pipeline(ema)
        out = []
        for i in range(0, len(prompts), 64):
            out += pipe.sample(requests(prompts[i:i + 64], list(range(i, min(i + 64, len(prompts))))),
                               pipe.settings()).images
        ema.train(False)
        return out

    def samples(self, ema, step):
        prompts = (self.cfg.sample_prompts or self.val_prompts)[:SAMPLE_GRID]
        pipe = self.pipeline(ema)
        ims = pipe.sample(requests(prompts, list(range(len(prompts)))), pipe.settings()).images
        ema.train(False)
        return grid(ims, cols=8)

    def export_extra(self, defaults: dict, extra: dict) -> dict:
        """Config keys for the exported folder: the styles trained on and a default style (as
        the diffusion family records them), the family's default settings, provenance."""
        styles = self.captions.styles if self.cfg.style_prob > 0 else []
        if styles:
            defaults = {**defaults, "style": "twemoji" if "twemoji" in styles else styles[0]}
            return {"styles": styles, "defaults": defaults, "preset": self.cfg.preset, **extra}
        return {"defaults": defaults, "preset": self.cfg.preset, **extra}


_EVAL_CACHE: dict = {}


def embed_for_validation(images) -> torch.Tensor:
    """Images (PIL list or (N, 3, H, W) uint8) -> the shipped contrastive evaluator's embeddings
    (N, 384); the evaluator is loaded once per process. Validation only: training never reads it."""
    from ..eval.contrastive import load_evaluator

    if "ev" not in _EVAL_CACHE:
        _EVAL_CACHE["ev"] = load_evaluator()
    return _EVAL_CACHE["ev"].embed_images(images)


def validation_distance(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance between two embedding sets when both have at least 16 rows (a tiny run's
    held-out set can be 1 image), else the squared distance of their means (FD's first term)."""
    if len(fake) >= 16 and len(real) >= 16:
        from ..eval.metrics import frechet_distance

        return float(frechet_distance(fake, real))
    return float((fake.mean(0) - real.mean(0)).pow(2).sum())
