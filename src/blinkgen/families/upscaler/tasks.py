"""The upscaler family's training task (the protocol: train/task.py): x2 super-resolution on
high-resolution images (`--size 128`), each paired with its LANCZOS-downsampled copy
(folder.degrade).

Loss: L1 on pixels plus EDGE_WEIGHT times L1 on horizontal and vertical finite differences (an
edge term: plain L1 alone is happy with soft edges, and edges are what bicubic loses). Trained on
random CROP x CROP crops of the low-resolution image (and the matching 2x crop of the target),
mirrored at random: the network is convolutional, so crops teach it the same function for a
quarter of the compute of whole images.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data.types import ImageCaptionSet
from ...errors import ModelLoadError, UserInputError
from ...models.autoencoder import psnr, to_pixels, to_uint8
from ...models.upscaler import UPSCALER_PRESETS, Upscaler
from ...pngmeta import grid
from ...precision import dtype_of
from ...train.config import TrainConfig
from ...train.task import Task
from .folder import degrade, save_upscaler_folder

CROP = 32  # low-resolution crop side in training
EDGE_WEIGHT = 0.5


def edge_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of a and b (B, 3, H, W)."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


class UpscalerTask(Task):
    """Trains models/upscaler.Upscaler on (degraded, original) pairs of the dataset's images."""

    def __init__(self, cfg: TrainConfig, train: ImageCaptionSet, val: ImageCaptionSet, device):
        if cfg.preset not in UPSCALER_PRESETS:
            raise ModelLoadError(f"unknown upscaler preset {cfg.preset!r}; choose from {sorted(UPSCALER_PRESETS)}")
        base = UPSCALER_PRESETS[cfg.preset]
        if cfg.size % base.scale or cfg.size // base.scale < CROP:
            raise UserInputError(f"the upscaler trains on the output size (--size 128 for 64 -> 128), got {cfg.size}")
        self.cfg, self.device = cfg, device
        self.model = Upscaler(replace(base, input_size=cfg.size // base.scale))
        s = base.scale
        self.hr, self.lr = train.images.to(device), degrade(train.images, s).to(device)  # (N, 3, 2h, 2h), (N, 3, h, h)
        self.val_hr, self.val_lr = val.images.to(device), degrade(val.images, s).to(device)
        self.n_train = len(train)

    def draw(self, g: torch.Generator, B: int) -> dict:
        room = self.lr.shape[-1] - CROP + 1
        return {"x": torch.randint(0, room, (B,), generator=g), "y": torch.randint(0, room, (B,), generator=g),
                "flip": torch.rand((B,), generator=g) < 0.5}

    def loss(self, model, idx, rnd):
        s = self.model.cfg.scale
        lr, hr = [], []
        for i, x, y, f in zip(idx.tolist(), rnd["x"].tolist(), rnd["y"].tolist(), rnd["flip"].tolist()):
            a = self.lr[i, :, y:y + CROP, x:x + CROP]  # (3, c, c)
            b = self.hr[i, :, s * y:s * (y + CROP), s * x:s * (x + CROP)]  # (3, sc, sc)
            lr.append(a.flip(-1) if f else a)
            hr.append(b.flip(-1) if f else b)
        target = to_pixels(torch.stack(hr))
        pred = model(to_pixels(torch.stack(lr))).float()
        l1 = (pred - target).abs().mean()
        edge = edge_l1(pred, target)
        return l1 + EDGE_WEIGHT * edge, {"l1": l1.detach(), "edge": edge.detach()}

    @torch.no_grad()
    def upscaled(self, net, lr_uint8: torch.Tensor) -> torch.Tensor:
        return torch.cat([to_uint8(net(to_pixels(lr_uint8[i:i + 64])).float().clamp(-1, 1))
                          for i in range(0, len(lr_uint8), 64)])

    @torch.no_grad()
    def validate(self, ema) -> dict:
        out = self.upscaled(ema, self.val_lr).cpu()
        bic = to_uint8(ema.bicubic(to_pixels(self.val_lr)).clamp(-1, 1)).cpu()
        p = psnr(out, self.val_hr.cpu())
        return {"val_psnr": p, "val_psnr_bicubic": psnr(bic, self.val_hr.cpu()), "val_loss": -p}

    @torch.no_grad()
    def samples(self, ema, step):
        from PIL import Image

        lr, hr = self.val_lr[:8], self.val_hr[:8]
        bic = to_uint8(ema.bicubic(to_pixels(lr)).clamp(-1, 1))
        rows = [bic, self.upscaled(ema, lr), hr]  # bicubic, ours, the original
        ims = [Image.fromarray(t.permute(1, 2, 0).cpu().numpy()) for r in rows for t in r]
        return grid(ims, cols=len(lr))

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_upscaler_folder(folder, ema, extra, dtype=dtype_of(self.cfg.save_dtype))
