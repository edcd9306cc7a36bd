"""The constant family's pipeline: prompt -> pooled MiniLM -> colour -> a flat image."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from blinkgen.pipeline import Pipeline, SampleResult, Settings
from blinkgen.text.encoder import DEFAULT_MAX_TOKENS, shared_encoder

from .folder import DEFAULTS, ColourNet, load_folder, save_folder

JITTER = 0.03  # per-pixel noise from the image's seed, so seeds give different bytes


@dataclass(frozen=True)
class ConstantSettings(Settings):
    """steps and guidance are accepted and ignored: one network call makes the colour."""


class ConstantPipeline(Pipeline):
    family = "constant"
    samplers = ("flat",)
    settings_type = ConstantSettings

    def __init__(self, net: ColourNet, config: dict, name: str = "constant", device="cpu", dtype: str = "fp32"):
        self.net, self.config, self.name = net.eval().requires_grad_(False), config, name
        self.image_size = int(config["image_size"])
        d = {**DEFAULTS, **config.get("defaults", {})}
        self.defaults = ConstantSettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]))
        self.text = shared_encoder("cpu")

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "ConstantPipeline":
        net, config = load_folder(folder)
        return cls(net, config, name=Path(folder).name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        return save_folder(path, self.net, self.image_size, {k: v for k, v in self.config.items()
                                                            if k not in ("family", "hidden", "image_size")})

    @torch.inference_mode()
    def _sample(self, requests, settings, callback=None) -> SampleResult:
        t0 = time.perf_counter()
        pooled = torch.cat([self.text.encode_fixed([r.prompt], DEFAULT_MAX_TOKENS).pooled for r in requests])
        t1 = time.perf_counter()
        colour = self.net(pooled)  # (B, 3)
        if callback is not None:
            callback(1, 1, None)
        t2 = time.perf_counter()
        S = self.image_size
        noise = torch.stack([torch.randn((3, S, S), generator=torch.Generator().manual_seed(r.seed))
                             for r in requests])  # (B, 3, S, S), one generator per image
        px = ((colour[:, :, None, None] + JITTER * noise).clamp(0, 1) * 255).round().to(torch.uint8)
        images = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]
        return SampleResult(images, {"text": t1 - t0, "sample": t2 - t1, "decode": time.perf_counter() - t2},
                            [1] * len(requests))
