"""The VAE family's model folder (the one-pass layout, families/onepass.py, with the network's
config under "cvae": prior, encoder and decoder are all saved, so a folder can also encode), its
presets and a tiny random model for tests.

Presets: the network's widths per side, the latent grid, and
    space          "pixel" | "latent" (latent needs --autoencoder)
    kl_weight      weight of KL(q || p) in the loss (1 = the true negative ELBO)
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...models.autoencoder import AE_PRESETS, AutoencoderKL
from ...models.cvae import CVAEConfig, TextConditionalVAE
from ..onepass import ImageSpace, load_onepass_folder, save_onepass_folder

DEFAULTS = {"steps": 1, "guidance": 1.0, "sampler": "prior"}
NET_KEY = "cvae"

PRESETS: dict[str, dict] = {
    "tiny": {"space": "pixel", "z_channels": 4, "z_size": 4, "w_dim": 32, "widths": {4: 32, 8: 16, 16: 16, 32: 8, 64: 8},
             "attn": [8], "heads": 2, "kl_weight": 1.0},
    "tiny-latent": {"space": "latent", "z_channels": 4, "z_size": 4, "w_dim": 32, "widths": {4: 32, 8: 16, 16: 16},
                    "attn": [8], "heads": 2, "kl_weight": 1.0},
    # the 64 px model over the AutoencoderKL's 4 x 16 x 16 latents, z: 16 x 4 x 4
    "S": {"space": "latent", "z_channels": 16, "z_size": 4, "w_dim": 256, "widths": {4: 256, 8: 192, 16: 128},
          "attn": [8], "heads": 4, "kl_weight": 1.0},
    # in pixel space, z: 8 x 8 x 8
    "pixel-S": {"space": "pixel", "z_channels": 8, "z_size": 8, "w_dim": 256,
                "widths": {8: 192, 16: 128, 32: 64, 64: 32}, "attn": [8], "heads": 4, "kl_weight": 1.0},
    # the founding documents' worked example: 32 x 32 shapes in pixels, trainable in minutes
    "small": {"space": "pixel", "z_channels": 8, "z_size": 4, "w_dim": 128, "widths": {4: 128, 8: 96, 16: 64, 32: 32},
              "attn": [8], "heads": 4, "kl_weight": 1.0},
}


def cvae_config(preset: dict, space: ImageSpace) -> CVAEConfig:
    return CVAEConfig(in_channels=space.channels, in_size=space.side, z_channels=preset["z_channels"],
                      z_size=preset["z_size"], w_dim=preset["w_dim"], widths=dict(preset["widths"]),
                      attn=tuple(preset["attn"]), heads=preset["heads"])


def save_vae_folder(path, net: TextConditionalVAE, space: ImageSpace, extra: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    return save_onepass_folder(path, "vae", NET_KEY, net, space, {"defaults": dict(DEFAULTS), **(extra or {})}, dtype)


def load_vae_folder(folder) -> tuple[TextConditionalVAE, ImageSpace, dict]:
    return load_onepass_folder(folder, "vae", NET_KEY, lambda d: TextConditionalVAE(CVAEConfig.from_dict(d)))


def tiny(path, seed: int = 0, image_size: int = 32, space: str = "pixel") -> Path:
    """A randomly initialised tiny VAE model folder (preset "tiny"; space "latent" adds a random
    tiny AutoencoderKL): the real code paths, noise-like images."""
    torch.manual_seed(seed)
    ae = AutoencoderKL(AE_PRESETS["tiny"]) if space == "latent" else None
    sp = ImageSpace(image_size, ae)
    preset = dict(PRESETS["tiny"])
    if sp.side < 8:
        preset["z_size"] = sp.side // 2
    net = TextConditionalVAE(cvae_config(preset, sp))
    with torch.no_grad():  # zero-initialised FiLM / attention outputs would hide the prompt; perturb them
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return save_vae_folder(path, net, sp, {"preset": "tiny"})
