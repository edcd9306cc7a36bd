"""Helpers that build small but real models for tests (random weights, the real code paths).

Nothing here is a mock: a tiny model folder goes through the same save/load/sample code as the
shipped model; it just has not been trained, so its images are noise-like."""
from __future__ import annotations

from pathlib import Path

import torch

from .diffusion import save_diffusion_folder
from .models.autoencoder import AE_PRESETS, Autoencoder
from .models.dit import DIT_PRESETS, DiT, DiTConfig


def tiny_model(path, seed: int = 0, image_size: int = 32) -> Path:
    """A randomly initialised tiny diffusion model folder (about 0.3M parameters)."""
    torch.manual_seed(seed)
    ae = Autoencoder(AE_PRESETS["tiny"])
    dit = DiT(DiTConfig(latent_size=image_size // ae.cfg.downsample, **DIT_PRESETS["tiny"]))
    with torch.no_grad():  # zero-init outputs would make every image identical; perturb them
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return save_diffusion_folder(path, dit, ae, {"defaults": {"steps": 4, "guidance": 2.0, "sampler": "dpmpp2m"}})
