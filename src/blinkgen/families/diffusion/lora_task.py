"""Fine-tuning a diffusion model folder with LoRA adapters (`blinkgen finetune`, task "lora"):
flow matching on a few captioned pictures, exactly the DiffusionTask's loss, but only the
adapters on the denoiser's attention and MLP projections learn (train/lora.py); the autoencoder,
the text encoder and every other denoiser weight stay the base model's.

The exported "model" is the adapter folder (peft's adapter_model.safetensors + adapter_config.json
and blinkgen's config.json naming the base model by the hash of its weights).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ...data.types import ImageCaptionSet
from ...errors import UserInputError
from ...pipeline import requests
from ...pngmeta import grid
from ...train import lora
from ...train.task import adamw
from .folder import load_diffusion_folder
from .pipeline import DiffusionPipeline
from .tasks import DiffusionTask

SAMPLE_IMAGES = 8  # images in each sample grid: the concept's captions, cycled, seeds 0..7
VAL_DRAWS = 64  # (noise, t) draws over the held-out pictures per validation: a steadier number


class DiffusionLoRATask(DiffusionTask):
    """cfg.base: the model folder to adapt; cfg.lora_rank: the adapters' rank (alpha = rank)."""

    def __init__(self, cfg, train: ImageCaptionSet, val: ImageCaptionSet, device):
        self.cfg, self.device = cfg, device
        self.base = lora.resolve_base(cfg.base)
        dit, ae, config = load_diffusion_folder(self.base)
        if config.get("family") != "diffusion":
            raise UserInputError(f"{self.base} is a {config.get('family')} model, not a diffusion one")
        if int(config["image_size"]) != cfg.size:
            raise UserInputError(f"the base model makes {config['image_size']}px images; "
                                 f"fine-tune it at size={config['image_size']}, not {cfg.size}")
        self.base_config = config
        self.ae = ae.to(device).eval().requires_grad_(False)
        self.model = lora.wrap(dit, "denoiser", cfg.lora_rank)  # only the adapters train
        style = (config.get("defaults") or {}).get("style")
        if style and train.styles is None:  # caption as the base model is prompted: "<x> in <style> style"
            train, val = (replace(d, styles=[style] * len(d)) for d in (train, val))
        self.val_repeats = max(1, VAL_DRAWS // len(val))
        self._prepare(train, val)
        self.concept = list(dict.fromkeys(c[0] for c in train.captions + val.captions))
        self.style = style

    def optimizers(self, model, cfg, device):
        return {"model": adamw(lora.trainable(model), cfg, device)}

    def pipeline(self, ema) -> DiffusionPipeline:
        cfg = {"image_size": self.cfg.size, **{k: v for k, v in self.base_config.items() if k != "dit"}}
        return DiffusionPipeline(ema, self.ae, cfg, device=self.device)

    @torch.no_grad()
    def samples(self, ema, step):
        """The concept's captions (plain, with the base model's default style), seeds 0..7."""
        prompts = (self.cfg.sample_prompts or self.concept)
        prompts = [prompts[i % len(prompts)] for i in range(SAMPLE_IMAGES)]
        pipe = self.pipeline(ema)
        ims = pipe.sample(requests(prompts, list(range(len(prompts)))), pipe.settings()).images
        ema.train(False)
        return grid(ims, cols=SAMPLE_IMAGES)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        base = lora.base_record(self.base, "diffusion")
        return lora.save_adapter(ema, folder, base, "denoiser",
                                 {**extra, "concept": self.concept, "style": self.style})
