"""The GAN family's training task on the one loop: two named optimizers, "discriminator" then
"generator", one loss method each (train/task.py), and the generator's EMA as the exported model.

The recipe follows R3GAN (Huang, Gokaslan, Kuleshov, Tompkin 2024, "The GAN is dead; long live
the GAN! A Modern GAN Baseline"): the relativistic pairing loss (RpGAN, Jolicoeur-Martineau 2019)
made stable by zero-centred gradient penalties on BOTH real (R1, Mescheder et al. 2018) and fake
(R2) data, Adam with beta1 = 0, no normalisation in the discriminator, and an EMA of the generator.
Text conditioning: the discriminator is a projection discriminator (Miyato & Koyama 2018) on the
pooled MiniLM embedding, and, as in GigaGAN's matching-aware loss (Kang et al. 2023, after Reed
et al. 2016), a real image paired with another image's prompt counts as fake, so the
discriminator must check the prompt, not only realism. Each fake is paired with the real image
whose caption made it, which is what the relativistic pairing compares.

With x a real image and t its caption, x~ = G(z, t), x' a real image with t' another caption:
    D loss = softplus(D(x~, t) - D(x, t)) + match_weight * softplus(D(x, t') - D(x, t))
             + gamma / 2 * (E ||grad_x D(x, t)||^2 + E ||grad_x~ D(x~, t)||^2)
    G loss = softplus(D(x, t) - D(G(z, t), t))
The penalties are computed on the first `penalty_rows` share of the batch's rows each step.

Why not a projected discriminator on the contrastive evaluator's features: the evaluator is the
instrument that measures FD, alignment and R@1; a generator trained to fool a discriminator built
on it would be optimised against the benchmark's own ruler. The discriminator here is separate.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...modelio import unwrap
from ...models.gan import Discriminator, DiscriminatorConfig, Generator
from ...precision import dtype_of
from ..onepass_task import OnePassTask, embed_for_validation, validation_distance
from .folder import DEFAULTS, PRESETS, generator_config, save_gan_folder
from .pipeline import GANPipeline

ADAM_BETAS = (0.0, 0.99)  # R3GAN's (and StyleGAN's) Adam: no first-moment momentum


def gradient_penalty(D: nn.Module, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x, t)||^2 over the rows of x (b, C, S, S): R1 on real images, R2 on fakes.
    Differentiable (create_graph), so it trains the discriminator."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x, pooled).sum(), x, create_graph=True)
    return g.float().square().flatten(1).sum(1).mean()


class GANTask(OnePassTask):
    family = "gan"

    def __init__(self, cfg, train, val, device):
        super().__init__(cfg, train, val, device, PRESETS)
        p = self.preset
        G = Generator(generator_config(p, self.space))
        D = Discriminator(DiscriminatorConfig(in_channels=self.space.channels, in_size=self.space.side,
                                              widths=dict(p["d_widths"]), feat_dim=p["feat_dim"]))
        self.model = nn.ModuleDict({"generator": G, "discriminator": D})
        self.z_dim = G.cfg.z_dim
        self._val_real = None

    # --- the protocol ------------------------------------------------------------------------
    def optimizers(self, model, cfg, device):
        return {"discriminator": self.adam(model["discriminator"].parameters(), ADAM_BETAS, self.preset["d_lr_scale"]),
                "generator": self.adam(model["generator"].parameters(), ADAM_BETAS)}

    def losses(self):
        return {"discriminator": self.discriminator_loss, "generator": self.generator_loss}

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {**self.draw_caption_uniforms(g, B), "z_d": torch.randn((B, self.z_dim), generator=g),
                "z_g": torch.randn((B, self.z_dim), generator=g)}

    def _inputs(self, idx, rnd):
        cid = self.caption_ids(idx, rnd)
        return self.batch(idx), cid, self.text(cid)

    def discriminator_loss(self, model, idx, rnd):
        m = unwrap(model)
        G, D = m["generator"], m["discriminator"]
        D.requires_grad_(True)
        x, cid, t = self._inputs(idx, rnd)
        with torch.no_grad():
            fake = G(rnd["z_d"].to(self.device), t.states, t.mask, t.pooled)
        d_real, d_fake = D(x, t.pooled), D(fake, t.pooled)
        adv = F.softplus(d_fake - d_real).mean()
        # matching-aware: each real image with the next row's caption, where that caption differs
        wrong = cid.roll(1)
        differ = (wrong != cid).float()
        d_wrong = D(x, self.pooled[wrong])
        match = (F.softplus(d_wrong - d_real) * differ).sum() / differ.sum().clamp(min=1.0)
        r = max(1, round(len(idx) * self.preset["penalty_rows"]))
        r1 = gradient_penalty(D, x[:r], t.pooled[:r])
        r2 = gradient_penalty(D, fake[:r], t.pooled[:r])
        loss = adv + self.preset["match_weight"] * match + self.preset["gamma"] / 2 * (r1 + r2)
        return loss, {"adv": adv.detach(), "match": match.detach(), "r1": r1.detach(), "r2": r2.detach(),
                      "real_minus_fake": (d_real - d_fake).detach().mean()}

    def generator_loss(self, model, idx, rnd):
        m = unwrap(model)
        G, D = m["generator"], m["discriminator"]
        D.requires_grad_(False)  # this phase steps the generator only
        x, _, t = self._inputs(idx, rnd)
        fake = G(rnd["z_g"].to(self.device), t.states, t.mask, t.pooled)
        with torch.no_grad():
            d_real = D(x, t.pooled)
        loss = F.softplus(d_real - D(fake, t.pooled)).mean()
        return loss, {}

    # --- evaluation and export ----------------------------------------------------------------
    def pipeline(self, ema) -> GANPipeline:
        g = ema["generator"] if isinstance(ema, nn.ModuleDict) else ema
        return GANPipeline(g, self.space, {"image_size": self.cfg.size}, device=self.device)

    @torch.no_grad()
    def validate(self, ema) -> dict:
        """val_loss: Fréchet distance, in the shipped contrastive evaluator's space, between the EMA
        generator's images of the held-out prompts (seeds 0..) and the held-out real images (the
        squared distance of means for a held-out set under 16 images); also their alignment."""
        from ...eval.metrics import alignment
        from ...eval.contrastive import encode_pooled

        if self._val_real is None:
            self._val_real = embed_for_validation(self.val_images)
            self._val_text = encode_pooled(self.val_prompts)
        fake = embed_for_validation(self.generate_val(ema))
        return {"val_loss": validation_distance(fake, self._val_real),
                "val_alignment": alignment(fake, self._val_text)}

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_gan_folder(folder, ema["generator"], self.space, self.export_extra(DEFAULTS, extra),
                               dtype=dtype_of(self.cfg.save_dtype))
