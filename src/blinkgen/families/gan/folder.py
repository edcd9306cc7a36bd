"""The GAN family's model folder (the one-pass layout, families/onepass.py, with the generator's
config under "generator"; the discriminator lives only in training checkpoints), its presets and a
tiny random model for tests.

Presets: the networks' widths per side plus the objective's constants (families/gan/tasks.py):
    space          "pixel" | "latent" (latent needs --autoencoder)
    gamma          weight of the R1 + R2 gradient penalties: loss += gamma / 2 * (R1 + R2)
    penalty_rows   share of each batch's rows the penalties are computed on (an unbiased estimate
                   of the full-batch penalty at a fraction of its double-backward cost)
    match_weight   weight of the matching-aware term (real image, wrong prompt = fake)
    d_lr_scale     the discriminator's learning rate relative to --lr
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...models.autoencoder import AE_PRESETS, AutoencoderKL
from ...models.gan import Generator, GeneratorConfig
from ..onepass import ImageSpace, load_onepass_folder, save_onepass_folder

DEFAULTS = {"steps": 1, "guidance": 1.0, "sampler": "onepass"}
NET_KEY = "generator"

_OBJECTIVE = {"gamma": 0.1, "penalty_rows": 0.25, "match_weight": 1.0, "d_lr_scale": 1.0}
PRESETS: dict[str, dict] = {
    # tests: a few thousand parameters, any side
    "tiny": {"space": "pixel", "z_dim": 16, "w_dim": 32, "widths": {4: 32, 8: 16, 16: 16, 32: 8, 64: 8},
             "attn": [8], "heads": 2, "d_widths": {4: 32, 8: 16, 16: 16, 32: 8, 64: 8}, "feat_dim": 32, **_OBJECTIVE},
    "tiny-latent": {"space": "latent", "z_dim": 16, "w_dim": 32, "widths": {4: 32, 8: 16, 16: 16}, "attn": [8],
                    "heads": 2, "d_widths": {4: 32, 8: 16, 16: 16}, "feat_dim": 32, **_OBJECTIVE},
    # the 64 px model over the AutoencoderKL's 4 x 16 x 16 latents
    "S": {"space": "latent", "z_dim": 128, "w_dim": 256, "widths": {4: 256, 8: 192, 16: 128}, "attn": [8, 16],
          "heads": 4, "d_widths": {4: 256, 8: 192, 16: 128}, "feat_dim": 256, **_OBJECTIVE},
    # the same budget in pixel space (no decoder)
    "pixel-S": {"space": "pixel", "z_dim": 128, "w_dim": 256, "widths": {4: 256, 8: 192, 16: 96, 32: 48, 64: 24},
                "attn": [8, 16], "heads": 4, "d_widths": {4: 256, 8: 192, 16: 96, 32: 48, 64: 24}, "feat_dim": 256,
                **_OBJECTIVE},
    # the founding documents' worked example: 32 x 32 shapes in pixels, trainable in minutes
    "small": {"space": "pixel", "z_dim": 64, "w_dim": 128, "widths": {4: 128, 8: 96, 16: 64, 32: 32}, "attn": [8],
              "heads": 4, "d_widths": {4: 128, 8: 96, 16: 64, 32: 32}, "feat_dim": 128, **_OBJECTIVE},
}


def generator_config(preset: dict, space: ImageSpace) -> GeneratorConfig:
    return GeneratorConfig(out_channels=space.channels, out_size=space.side, z_dim=preset["z_dim"],
                           w_dim=preset["w_dim"], widths=dict(preset["widths"]), attn=tuple(preset["attn"]),
                           heads=preset["heads"])


def save_gan_folder(path, generator: Generator, space: ImageSpace, extra: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    return save_onepass_folder(path, "gan", NET_KEY, generator, space, {"defaults": dict(DEFAULTS), **(extra or {})},
                               dtype)


def load_gan_folder(folder) -> tuple[Generator, ImageSpace, dict]:
    return load_onepass_folder(folder, "gan", NET_KEY, lambda d: Generator(GeneratorConfig.from_dict(d)))


def tiny(path, seed: int = 0, image_size: int = 32, space: str = "pixel") -> Path:
    """A randomly initialised tiny GAN model folder (preset "tiny"; space "latent" adds a random
    tiny AutoencoderKL): the real code paths, noise-like images."""
    torch.manual_seed(seed)
    ae = AutoencoderKL(AE_PRESETS["tiny"]) if space == "latent" else None
    sp = ImageSpace(image_size, ae)
    g = Generator(generator_config(PRESETS["tiny"], sp))
    with torch.no_grad():  # zero-initialised FiLM / attention outputs would hide the prompt; perturb them
        for p in g.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return save_gan_folder(path, g, sp, {"preset": "tiny"})
