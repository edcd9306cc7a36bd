"""The VAE family's pipeline: prompt -> MiniLM -> the learned prior p(z | prompt) -> z = mu +
temperature * sigma * eps, eps from the image's own seed -> the decoder's mean, in ONE pass ->
pixels (directly, or through the AutoencoderKL decoder for a latent-space model)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import UserInputError
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

    def __init__(self, net, space, config: dict, name: str = "vae", device="cpu", dtype: str = "fp32"):
        d = {**DEFAULTS, **config.get("defaults", {})}
        defaults = VAESettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]), style=d.get("style") or None)
        self.temperature = float(d.get("temperature", 1.0))
        super().__init__(net, space, config, defaults, name, device, dtype)

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "VAEPipeline":
        net, space, config = load_vae_folder(folder)
        return cls(net, space, config, name=Path(folder).name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        return save_vae_folder(path, self.model, self.space,
                               {k: v for k, v in self.config.items() if k not in ("family", "cvae", "space", "image_size")})

    def _check_settings(self, settings: VAESettings) -> None:
        super()._check_settings(settings)
        t = settings.temperature
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= MAX_TEMPERATURE):
            raise UserInputError(f"temperature must be a number in [0, {MAX_TEMPERATURE:g}], got {t!r}")

    def noise(self, seeds: list[int]) -> torch.Tensor:
        return seeded_normal(self.model.z_shape, seeds)  # (B, zc, zs, zs)

    def _net(self, eps: torch.Tensor, text: TextBatch, settings: VAESettings) -> torch.Tensor:
        temp = self.temperature if settings.temperature is None else float(settings.temperature)
        return self.model.sample(eps, text.states, text.mask, text.pooled, temp)  # (B, C, S, S)
