"""The upscaler family's pipeline: each request's init_image (resampled to the model's input
size, 64 px for the shipped one) -> the x2 network (models/upscaler.py) -> image_size px.

The prompt and seed are recorded but do not change the pixels (one deterministic network pass);
`steps`, `guidance` and the one sampler, "direct", are accepted and ignored. The model folder is
described in folder.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ...models.autoencoder import to_pixels, to_uint8
from ...models.upscaler import Upscaler
from ...pipeline import Pipeline, Request, SampleResult, Settings
from ...precision import dtype_of
from ...sampling.edit import init_pixels
from .folder import DEFAULTS, load_upscaler_folder, save_upscaler_folder


@dataclass(frozen=True)
class UpscalerSettings(Settings):
    """steps, guidance and sampler ("direct") are accepted and ignored: one network pass."""


class UpscalerPipeline(Pipeline):
    family = "upscaler"
    samplers = ("direct",)
    settings_type = UpscalerSettings
    max_steps = 1
    supports = frozenset({"init_image"})
    requires = frozenset({"init_image"})

    def __init__(self, net: Upscaler, config: dict, name: str = "upscaler", device="cpu", dtype: str = "fp32"):
        self.device, self.dtype = torch.device(device), dtype_of(dtype)
        self.net = net.eval().requires_grad_(False).to(self.device, self.dtype)
        self.config, self.name = config, name
        self.input_size = int(net.cfg.input_size)
        self.image_size = self.input_size * int(net.cfg.scale)
        d = {**DEFAULTS, **config.get("defaults", {})}
        self.defaults = UpscalerSettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]))

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "UpscalerPipeline":
        net, config = load_upscaler_folder(folder)
        return cls(net, config, name=Path(folder).name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        keep = {k: v for k, v in self.config.items() if k not in ("family", "upscaler", "input_size", "image_size")}
        return save_upscaler_folder(path, self.net.float(), keep)

    @torch.inference_mode()
    def upscale(self, pixels_uint8: torch.Tensor) -> torch.Tensor:
        """(B, 3, input_size, input_size) uint8 -> (B, 3, image_size, image_size) uint8."""
        x = to_pixels(pixels_uint8.to(self.device)).to(self.dtype)
        return to_uint8(self.net(x).float().clamp(-1, 1)).cpu()

    def _sample(self, requests: list[Request], settings: UpscalerSettings, callback=None) -> SampleResult:
        t0 = time.perf_counter()
        lr = torch.stack([init_pixels(r.init_image, self.input_size) for r in requests])  # (B, 3, s, s)
        t1 = time.perf_counter()
        px = self.upscale(lr)  # (B, 3, 2s, 2s)
        if callback is not None:
            callback(1, 1, None)
        t2 = time.perf_counter()
        images = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]
        return SampleResult(images, {"text": 0.0, "sample": t2 - t1, "decode": time.perf_counter() - t2,
                                     "encode": t1 - t0}, [1] * len(requests))
