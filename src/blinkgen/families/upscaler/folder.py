"""The upscaler family's model folder: save, load, and a tiny random one for tests.

    config.json        {"family": "upscaler", "upscaler": {UpscalerConfig}, "image_size": 128,
                        "input_size": 64, "defaults": {...}, "degradation": "...", "training": {...}}
    model.safetensors  the network's weights (the EMA weights of training)
"""
from __future__ import annotations

from pathlib import Path

import torch

from ... import __version__
from ...errors import ModelLoadError
from ...modelio import load_into, read_config, read_tensors, state_dict_for_save, write_folder_atomic
from ...models.upscaler import UPSCALER_PRESETS, Upscaler, UpscalerConfig

DEFAULTS = {"steps": 1, "guidance": 1.0, "sampler": "direct"}
# How training makes the low-resolution input from a high-resolution image: PIL's LANCZOS
# resize, the same filter the dataset loaders use to bring pictures to 64 px.
DEGRADATION = "PIL LANCZOS downsample by the scale"


def save_upscaler_folder(path, net: Upscaler, extra: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write a model folder atomically; extra: config keys to add (training provenance)."""
    cfg = net.cfg
    config = {"family": "upscaler", "blinkgen_version": __version__, "upscaler": cfg.to_dict(),
              "input_size": cfg.input_size, "image_size": cfg.input_size * cfg.scale,
              "degradation": DEGRADATION, "defaults": dict(DEFAULTS), **(extra or {})}
    return write_folder_atomic(path, {"config.json": config, "model.safetensors": state_dict_for_save(net, dtype)})


def load_upscaler_folder(folder) -> tuple[Upscaler, dict]:
    """A model folder -> (Upscaler in eval mode, fp32; config). ModelLoadError if it is not one."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        net = Upscaler(UpscalerConfig(**config["upscaler"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder}/config.json has no valid 'upscaler' section: {e}") from None
    load_into(net, read_tensors(folder / "model.safetensors"), str(folder))
    return net.float().eval(), config


def tiny(path, seed: int = 0, image_size: int = 32) -> Path:
    """A randomly initialised tiny upscaler folder whose OUTPUT is image_size px (input half of
    it): the real code paths. Its last layer is perturbed so it is not exactly bicubic."""
    torch.manual_seed(seed)
    cfg = UpscalerConfig(**{**UPSCALER_PRESETS["tiny"].to_dict(), "input_size": image_size // 2})
    net = Upscaler(cfg)
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.02)
    return save_upscaler_folder(path, net)


def degrade(images_uint8: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, H/scale, W/scale) uint8 with PIL's LANCZOS (DEGRADATION): how
    training and the benchmark make an upscaler's input from a high-resolution image."""
    import numpy as np
    from PIL import Image

    n, _, h, w = images_uint8.shape
    out = torch.empty((n, 3, h // scale, w // scale), dtype=torch.uint8)
    for i, im in enumerate(images_uint8.cpu()):
        small = Image.fromarray(im.permute(1, 2, 0).numpy()).resize((w // scale, h // scale), Image.Resampling.LANCZOS)
        out[i] = torch.from_numpy(np.asarray(small, dtype=np.uint8).copy()).permute(2, 0, 1)
    return out
