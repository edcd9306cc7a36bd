"""The VAE family's pipeline: prompt -> MiniLM -> the learned prior p(z | prompt) -> z = mu +
temperature * sigma * eps, eps from the image's own seed -> the decoder's mean, in ONE pass ->
pixels (directly, or through the AutoencoderKL decoder for a latent-space model)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...pipeline import Settings
from ...text.encoder import TextBatch
from ..onepass import OnePassPipeline, seeded_normal
from .folder import DEFAULTS, load_vae_folder, save_vae_folder

MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class VAESettings(Settings):
    """steps: 1 (one pass: prior, then decoder); guidance: 1 (none); sampler: "prior";
    temperature: scales the prior's standard deviation, in [0, 2] (0 = the prior's mean, the most
    typical image; 1 = the trained prior), None = the model's default; style: see `Pipeline`."""

    temperature: float | None = None


class VAEPipeline(OnePassPipeline):
    family = "vae"
    samplers = ("prior",)
    settings_type = VAESettings
    net_key = "cvae"

    knob = "temperature"
    knob_max = MAX_TEMPERATURE
    family_defaults = DEFAULTS
    folder_io = (load_vae_folder, save_vae_folder)

    def noise(self, seeds: list[int]) -> torch.Tensor:
        return seeded_normal(self.model.z_shape, seeds)  # (B, zc, zs, zs)

    def _net(self, eps: torch.Tensor, text: TextBatch, settings: VAESettings) -> torch.Tensor:
        temp = self.knob_value(settings)
        return self.model.sample(eps, text.states, text.mask, text.pooled, temp)  # (B, C, S, S)
