"""The VAE family's training task on the one loop: one optimizer ("model") over prior, encoder and
decoder, minimising the negative ELBO per data dimension (models/cvae.py) with the reparameterised
posterior sample drawn from the step's seed. The exported model is the EMA of all three."""
from __future__ import annotations

from pathlib import Path

import torch

from ...models.cvae import TextConditionalVAE
from ...precision import dtype_of
from ..onepass_task import OnePassTask, embed_for_validation, validation_distance
from .folder import DEFAULTS, PRESETS, cvae_config, save_vae_folder
from .pipeline import VAEPipeline

VAL_SEED = 1234  # the held-out ELBO's posterior noise: fixed, so val_loss is deterministic


class CVAETask(OnePassTask):
    family = "vae"

    def __init__(self, cfg, train, val, device):
        super().__init__(cfg, train, val, device, PRESETS)
        self.model = TextConditionalVAE(cvae_config(self.preset, self.space))
        self.kl_weight = float(self.preset["kl_weight"])
        self._val_real = None

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {**self.draw_caption_uniforms(g, B), "eps": torch.randn((B, *self.model.z_shape), generator=g)}

    def loss(self, model, idx, rnd):
        t = self.text(self.caption_ids(idx, rnd))
        return model(self.batch(idx), rnd["eps"].to(self.device), t.states, t.mask, t.pooled, self.kl_weight)

    def pipeline(self, ema) -> VAEPipeline:
        return VAEPipeline(ema, self.space, {"image_size": self.cfg.size}, device=self.device)

    @torch.no_grad()
    def validate(self, ema) -> dict:
        """val_loss: the held-out negative ELBO (nats per data dimension, fixed posterior noise,
        each image with its first caption, styled as the prompts are); also its KL, and the
        Fréchet distance of prior samples (seeds 0..) to the held-out images in the contrastive
        evaluator's space (squared distance of means under 16 images)."""
        n = len(self.val_data)
        g = torch.Generator().manual_seed(VAL_SEED)
        eps = torch.randn((n, *ema.z_shape), generator=g).to(self.device)
        tot, kls = 0.0, 0.0
        for i in range(0, n, 128):
            sl = slice(i, i + 128)
            t = self.text(self.val_cap[sl])
            x = self.batch(torch.arange(i, min(i + 128, n), device=self.device), val=True)
            loss, logs = ema(x, eps[sl], t.states, t.mask, t.pooled, 1.0)
            tot += float(loss) * len(x)
            kls += float(logs["kl"]) * len(x)
        if self._val_real is None:
            self._val_real = embed_for_validation(self.val_images)
        fake = embed_for_validation(self.generate_val(ema))
        return {"val_loss": tot / n, "val_kl": kls / n, "val_fd": validation_distance(fake, self._val_real)}

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_vae_folder(folder, ema, self.space, self.export_extra(DEFAULTS, extra),
                               dtype=dtype_of(self.cfg.save_dtype))
