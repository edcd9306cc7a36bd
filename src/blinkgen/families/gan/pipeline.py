"""The GAN family's pipeline: prompt -> MiniLM -> generator(z, text) in ONE pass -> pixels
(directly, or through the AutoencoderKL decoder for a latent-space model). z is drawn from the
image's own seed. The model folder is described in folder.py and families/onepass.py."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import UserInputError
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

    def __init__(self, generator, space, config: dict, name: str = "gan", device="cpu", dtype: str = "fp32"):
        d = {**DEFAULTS, **config.get("defaults", {})}
        defaults = GANSettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]), style=d.get("style") or None)
        self.truncation = float(d.get("truncation", 1.0))
        super().__init__(generator, space, config, defaults, name, device, dtype)

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "GANPipeline":
        g, space, config = load_gan_folder(folder)
        return cls(g, space, config, name=Path(folder).name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        return save_gan_folder(path, self.model, self.space,
                               {k: v for k, v in self.config.items() if k not in ("family", "generator", "space",
                                                                                 "image_size")})

    def _check_settings(self, settings: GANSettings) -> None:
        super()._check_settings(settings)
        t = settings.truncation
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= MAX_TRUNCATION):
            raise UserInputError(f"truncation must be a number in [0, {MAX_TRUNCATION:g}], got {t!r}")

    def noise(self, seeds: list[int]) -> torch.Tensor:
        return seeded_normal((self.model.cfg.z_dim,), seeds)  # (B, z_dim)

    def _net(self, z: torch.Tensor, text: TextBatch, settings: GANSettings) -> torch.Tensor:
        psi = self.truncation if settings.truncation is None else float(settings.truncation)
        return self.model(z * psi, text.states, text.mask, text.pooled)  # (B, C, S, S)
