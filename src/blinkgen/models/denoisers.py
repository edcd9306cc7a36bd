"""The diffusion family's denoiser networks by name, and their size presets (DiT-style registry).

Every denoiser maps (x (B, C, S, S), t (B,), ctx (B, L, 384), mask (B, L), pooled (B, 384)) to a
velocity (B, C, S, S), so the flow-matching task, the samplers and the pipeline never ask which
architecture they hold. A model folder's config.json names the architecture in `arch` ("dit" when
absent, for folders written before the registry) and its config under `dit`.
"""
from __future__ import annotations

from dataclasses import fields

import torch.nn as nn

from .dit import DIT_PRESETS, DiT, DiTConfig
from .unet import UNet, UNetConfig
from .uvit import UViT, UViTConfig

ARCHS: dict[str, tuple[type, type]] = {
    "dit": (DiT, DiTConfig),
    "uvit": (UViT, UViTConfig),
    "unet": (UNet, UNetConfig),
}

# preset name -> (architecture, config overrides). Plain names are the DiT sizes.
PRESETS: dict[str, tuple[str, dict]] = {
    **{name: ("dit", cfg) for name, cfg in DIT_PRESETS.items()},
    "uvit-tiny": ("uvit", dict(hidden=64, depth=2, heads=2, stem_channels=16)),
    "uvit-tiny-joint": ("uvit", dict(hidden=64, depth=2, heads=2, stem_channels=16, text_mode="joint")),
    "uvit-S": ("uvit", dict(hidden=256, depth=6, heads=4)),
    "uvit-M": ("uvit", dict(hidden=320, depth=8, heads=5)),
    "uvit-S-p4": ("uvit", dict(hidden=256, depth=6, heads=4, patch=4)),  # 4x fewer tokens: shapes recipe
    "uvit-S-p4-joint": ("uvit", dict(hidden=256, depth=6, heads=4, patch=4, text_mode="joint")),
    "uvit-XS-p4": ("uvit", dict(hidden=192, depth=6, heads=3, patch=4)),  # shapes: more images per CPU-s
    "uvit-M-p4": ("uvit", dict(hidden=320, depth=8, heads=5, patch=4)),  # shapes: capacity at 16 tokens
    "unet-tiny": ("unet", dict(channels=[16, 32], blocks=1, attn_levels=[1], heads=2, groups=8)),
    "unet-S": ("unet", dict(channels=[64, 128, 256], blocks=2, attn_levels=[1, 2], heads=4)),
    "unet-M": ("unet", dict(channels=[96, 192, 288], blocks=2, attn_levels=[1, 2], heads=6)),
}


def build(arch: str, cfg: dict) -> nn.Module:
    """A denoiser of architecture `arch` from a config dict (unknown keys -> TypeError)."""
    if arch not in ARCHS:
        raise KeyError(f"unknown denoiser architecture {arch!r}; known: {sorted(ARCHS)}")
    cls, cfg_cls = ARCHS[arch]
    return cls(cfg_cls(**cfg))


def from_preset(preset: str, latent_channels: int, latent_size: int) -> nn.Module:
    arch, over = PRESETS[preset]
    return build(arch, dict(latent_channels=latent_channels, latent_size=latent_size, **over))


def arch_of(model: nn.Module) -> str:
    for name, (cls, _) in ARCHS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered denoiser")


def _fields(c) -> dict:
    return {f.name: getattr(c, f.name) for f in fields(c)}


def config_dict(model: nn.Module) -> dict:
    return _fields(model.cfg)


def full_config(arch: str, cfg: dict) -> dict:
    """A folder's `dit` config with every field of its architecture's config, the absent ones at
    their defaults: a folder written before a field existed (e.g. U-ViT's `text_mode`) holds the
    network that default builds. Unknown architecture or keys -> the config as given, for the
    caller's comparison to name."""
    if arch not in ARCHS:
        return dict(cfg)
    try:
        c = ARCHS[arch][1](**cfg)
    except (TypeError, ValueError):
        return dict(cfg)
    return _fields(c)


def has_step_size_input(model: nn.Module) -> bool:
    """True when the denoiser takes the shortcut step size d (config step_size_cond)."""
    return bool(getattr(model.cfg, "step_size_cond", False))


def with_step_size_input(model: nn.Module) -> nn.Module:
    """A new denoiser of the same architecture and weights plus the shortcut step-size input
    (Frans et al. 2024): the added embedder starts at zero, so the copy's output equals the
    original's exactly for every d until it is trained. The original is untouched."""
    cfg = {**config_dict(model), "step_size_cond": True}
    new = build(arch_of(model), cfg)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("d_embed.") for k in missing):
        raise RuntimeError(f"step-size copy of {arch_of(model)}: missing {missing}, unexpected {unexpected}")
    return new.to(next(model.parameters()).device)
