"""The constant family's training tasks, on blinkgen's one loop (blinkgen/train/task.py)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from blinkgen.errors import UserInputError
from blinkgen.modelio import unwrap
from blinkgen.pipeline import requests
from blinkgen.pngmeta import grid
from blinkgen.train.captions import CaptionTable, encode_captions
from blinkgen.train.task import Task, adamw

from .folder import HIDDEN, ColourNet, load_folder, save_folder
from .pipeline import ConstantPipeline


class ColourTask(Task):
    """Regress each image's mean colour from the pooled embedding of one of its captions."""

    def __init__(self, cfg, train, val, device):
        if cfg.preset not in HIDDEN:
            raise UserInputError(f"unknown constant preset {cfg.preset!r}; choose from {sorted(HIDDEN)}")
        self.cfg, self.device = cfg, device
        self.model = ColourNet(HIDDEN[cfg.preset])
        self.n_train = len(train)
        self.target = train.images.float().mean(dim=(2, 3)).div(255).to(device)  # (N, 3)
        self.val_target = val.images.float().mean(dim=(2, 3)).div(255).to(device)
        self.captions = CaptionTable(train.captions, None, [c[0] for c in val.captions]).to(device)
        self.pooled = encode_captions(self.captions.strings, device).pooled.to(device)  # (U, 384)
        self.val_prompts = [c[0] for c in val.captions]
        self.val_cap = torch.tensor([self.captions.pos[p] for p in self.val_prompts], device=device)

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {"u": torch.rand((B,), generator=g)}

    def loss(self, model, idx, rnd):
        colour = model(self.pooled[self.captions.draw(idx, rnd["u"].to(self.device))])  # (b, 3)
        loss = F.mse_loss(colour.float(), self.target[idx])
        return loss, {"colour_error": (colour.detach() - self.target[idx]).abs().mean()}

    @torch.no_grad()
    def validate(self, ema) -> dict:
        return {"val_loss": F.mse_loss(ema(self.pooled[self.val_cap]).float(), self.val_target).item()}

    def samples(self, ema, step):
        pipe = ConstantPipeline(ema, {"image_size": self.cfg.size})
        prompts = self.val_prompts[:8]
        return grid(pipe.sample(requests(prompts, list(range(len(prompts)))), pipe.settings()).images)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_folder(folder, ema, self.cfg.size, extra)


class DuelTask(ColourTask):
    """Distil a frozen teacher's colours (the teacher: a constant model folder given as
    --autoencoder, else a seeded random net), with a critic that learns to tell teacher colours
    from student colours: two named optimizers, one loss method each, and a teacher."""

    def __init__(self, cfg, train, val, device):
        super().__init__(cfg, train, val, device)
        if cfg.autoencoder:
            self.teacher, _ = load_folder(cfg.autoencoder)
        else:
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed + 1)
                self.teacher = ColourNet(HIDDEN[cfg.preset])
        self.model = nn.ModuleDict({"critic": nn.Linear(3, 1), "colour": self.model})

    def optimizers(self, model, cfg, device):
        return {"critic": adamw(model["critic"].parameters(), cfg, device, lr_scale=0.5),
                "colour": adamw(model["colour"].parameters(), cfg, device)}

    def losses(self):
        return {"critic": self.critic_loss, "colour": self.colour_loss}

    def _pooled(self, idx, rnd):
        return self.pooled[self.captions.draw(idx, rnd["u"].to(self.device))]

    def critic_loss(self, model, idx, rnd):
        m = unwrap(model)
        p = self._pooled(idx, rnd)
        with torch.no_grad():
            real, fake = self.teacher(p), m["colour"](p)
        loss = F.softplus(-m["critic"](real)).mean() + F.softplus(m["critic"](fake)).mean()
        return loss, {"critic_gap": (m["critic"](real) - m["critic"](fake)).detach().mean()}

    def colour_loss(self, model, idx, rnd):
        m = unwrap(model)
        p = self._pooled(idx, rnd)
        colour = m["colour"](p)
        with torch.no_grad():
            target = self.teacher(p)
        distil = F.mse_loss(colour, target)
        return distil + 0.1 * F.softplus(-m["critic"](colour)).mean(), {"distil": distil.detach()}

    @torch.no_grad()
    def validate(self, ema) -> dict:
        p = self.pooled[self.val_cap]
        return {"val_loss": F.mse_loss(ema["colour"](p), self.teacher(p)).item()}

    def samples(self, ema, step):
        return super().samples(ema["colour"], step)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_folder(folder, ema["colour"], self.cfg.size, extra)
