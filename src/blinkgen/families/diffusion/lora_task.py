"""Fine-tuning a diffusion model folder with LoRA adapters (`blinkgen finetune`, task "lora"):
flow matching on a few captioned pictures, exactly the DiffusionTask's loss, but only the
adapters on the denoiser's attention and MLP projections learn (train/lora.py); the autoencoder,
the text encoder and every other denoiser weight stay the base model's.

Prior preservation (cfg.prior_weight > 0; after: DreamBooth's prior-preservation loss, Ruiz et al.
2023, with the frozen base model as the teacher instead of generated class images): measured on
the mascot, an adapter trained on the concept alone drew the mascot for "rocket" and "dog face" too
(bench/RESULTS.md, "LoRA fine-tuning"). So each step also asks the adapted network to predict, for
other prompts at the same noisy points, the velocity the base network predicts -- the base model
is the task's frozen `teacher` (train/task.py), and the other prompts are the captions the shipped
evaluator knows (the default data's emoji and shapes), styled as generation styles them.

The exported "model" is the adapter folder (peft's adapter_model.safetensors + adapter_config.json
and blinkgen's config.json naming the base model by the hash of its weights).
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data.types import ImageCaptionSet
from ...errors import UserInputError
from ...pipeline import requests
from ...pngmeta import grid
from ...sampling.flow import interpolate
from ...text.encoder import TEXT_LAYERS
from ...text.style import styled
from ...train import lora
from ...train.captions import encode_captions
from ...train.task import adamw
from .folder import load_diffusion_folder
from .pipeline import DiffusionPipeline
from .tasks import DiffusionTask

SAMPLE_IMAGES = 8  # images per sample-grid row: the concept's captions, cycled, seeds 0..7; then prior prompts
VAL_DRAWS = 64  # (noise, t) draws over the held-out pictures per validation: a steadier number
PRIOR_PROMPTS = 256  # other prompts the adapted model must keep drawing as the base does


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
        if cfg.prior_weight > 0:  # the base network, frozen (the loop keeps it out of training)
            self.teacher = copy.deepcopy(dit)
        self.model = lora.wrap(dit, "denoiser", cfg.lora_rank)  # only the adapters train
        style = (config.get("defaults") or {}).get("style")
        if style and train.styles is None:  # caption as the base model is prompted: "<x> in <style> style"
            train, val = (replace(d, styles=[style] * len(d)) for d in (train, val))
        self.val_repeats = max(1, VAL_DRAWS // len(val))
        self._prepare(train, val)
        self.concept = list(dict.fromkeys(c[0] for c in train.captions + val.captions))
        self.style = style
        if cfg.prior_weight > 0:
            self.prior_prompts = prior_prompts(cfg.seed, style)
            tb = encode_captions(self.prior_prompts, device, self.text_layers())
            self.prior_text = (tb.states.to(device, torch.float16), tb.mask.to(device), tb.pooled.to(device))

    def text_layers(self) -> int:
        return int(self.base_config.get("text_layers", TEXT_LAYERS))  # the adapters read as the base does

    def draw(self, g: torch.Generator, B: int) -> dict:
        rnd = super().draw(g, B)
        if self.cfg.prior_weight > 0:  # drawn after the concept's, so those stay what DiffusionTask draws
            rnd["u_prior"] = torch.rand((B,), generator=g)
        return rnd

    def loss(self, model, idx, rnd):
        loss, logs = super().loss(model, idx, rnd)
        if self.cfg.prior_weight <= 0:
            return loss, logs
        dev = self.device
        k = (rnd["u_prior"].to(dev) * len(self.prior_prompts)).long()  # (b,) a prior prompt per row
        states, mask, pooled = self.prior_text[0][k].float(), self.prior_text[1][k], self.prior_text[2][k]
        t = rnd["t"].to(dev)
        xt = interpolate(self.latents[idx], rnd["noise"].to(dev), t)  # the concept's noisy points
        with torch.no_grad():
            target = self.teacher(xt, t, states, mask, pooled).float()
        prior = F.mse_loss(model(xt, t, states, mask, pooled).float(), target)
        return loss + self.cfg.prior_weight * prior, {"concept": loss.detach(), "prior": prior.detach()}

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
        prompts += getattr(self, "prior_prompts", [])[:SAMPLE_IMAGES]  # a second row: does the concept leak?
        pipe = self.pipeline(ema)
        ims = pipe.sample(requests(prompts, [i % SAMPLE_IMAGES for i in range(len(prompts))]), pipe.settings()).images
        ema.train(False)
        return grid(ims, cols=SAMPLE_IMAGES)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        base = lora.base_record(self.base, "diffusion")
        return lora.save_adapter(ema, folder, base, "denoiser", {**extra, "concept": self.concept, "style": self.style,
                                                                 "prior_weight": self.cfg.prior_weight})


def prior_prompts(seed: int, style: str | None) -> list[str]:
    """PRIOR_PROMPTS of the shipped evaluator's captions (the default data's emoji names and shapes
    sentences), a fixed draw per seed, with the base model's default style phrase."""
    from ...eval.contrastive import EVALUATOR_DIR, read_captions

    caps = read_captions(EVALUATOR_DIR)
    pick = torch.randperm(len(caps), generator=torch.Generator().manual_seed(seed + 13))[:PRIOR_PROMPTS].tolist()
    return [styled(caps[i], style) for i in sorted(pick)]
