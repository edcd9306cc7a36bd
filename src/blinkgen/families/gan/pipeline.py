"""The GAN family's pipeline: prompt -> MiniLM -> generator(z, text) in ONE pass -> pixels
(directly, or through the AutoencoderKL decoder for a latent-space model). z is drawn from the
image's own seed. The model folder is described in folder.py and families/onepass.py."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...pipeline import Settings
from ...text.encoder import TextBatch
from ..onepass import OnePassPipeline, seeded_normal
from .folder import DEFAULTS, load_gan_folder, save_gan_folder

MAX_TRUNCATION = 2.0


@dataclass(frozen=True)
class GANSettings(Settings):
    """steps: 1 (one network pass); guidance: 1 (none: the generator reads the prompt directly);
    sampler: "onepass"; truncation: the noise z is scaled by it (the truncation trick of BigGAN,
    Brock et al. 2019: below 1 trades variety for typical images), in [0, 2], None = the model's
    default (1 unless its config sets one); style: see `Pipeline`."""

    truncation: float | None = None


class GANPipeline(OnePassPipeline):
    family = "gan"
    samplers = ("onepass",)
    settings_type = GANSettings
    net_key = "generator"

    knob = "truncation"
    knob_max = MAX_TRUNCATION
    family_defaults = DEFAULTS
    folder_io = (load_gan_folder, save_gan_folder)

    def noise(self, seeds: list[int]) -> torch.Tensor:
        return seeded_normal((self.model.cfg.z_dim,), seeds)  # (B, z_dim)

    def _net(self, z: torch.Tensor, text: TextBatch, settings: GANSettings) -> torch.Tensor:
        psi = self.knob_value(settings)
        return self.model(z * psi, text.states, text.mask, text.pooled)  # (B, C, S, S)
