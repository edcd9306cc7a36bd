"""Training the generative captioner with the one loop (`blinkgen train --family captioner`): the
task protocol (train/task.py) over any captioned folder or dataset spec.

Each image's target is its first (primary) caption: an emoji's CLDR name, a shapes scene's
canonical sentence -- one answer per image, so greedy decoding has a mode to find. The word
vocabulary is built from the training targets (text/vocab.py). The image features come from the
shipped contrastive evaluator's frozen image tower and are computed once for the whole set, so a
step costs only the small decoder.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ..errors import UserInputError
from ..models.captioner import CAPTIONER_PRESETS, Captioner, captioner_config
from ..precision import dtype_of
from ..text.vocab import WordVocab, split_words
from ..train.task import Task
from .captioner import FEATURES, CaptionWriter, feature_shapes, image_features, save_captioner
from .contrastive import load_evaluator

MAX_WORDS = 32  # longer targets are cut (the default data's longest primary caption has 16 words)
VAL_DECODE = 128  # held-out images decoded (greedily) at each validation for the exact-match rate


class CaptionerTask(Task):
    """cfg.preset: a CAPTIONER_PRESETS name; cfg.size must be the evaluator's image size."""

    def __init__(self, cfg, train, val, device):
        if cfg.preset not in CAPTIONER_PRESETS:
            raise UserInputError(f"unknown captioner preset {cfg.preset!r}; choose from {sorted(CAPTIONER_PRESETS)}")
        self.cfg, self.device = cfg, device
        self.ev = load_evaluator()
        if cfg.size != self.ev.image_size:
            raise UserInputError(f"the captioner reads {self.ev.image_size}px images (its image encoder's size); "
                                 f"train it with size={self.ev.image_size}")
        targets = [c[0] for c in train.captions]
        self.vocab = WordVocab.build(targets)
        words = min(MAX_WORDS, max(len(split_words(t)) for t in targets))
        dims, tokens = feature_shapes(self.ev)
        self.model = Captioner(captioner_config(cfg.preset, len(self.vocab), feature_dims=dims,
                                                feature_tokens=tokens, image_size=cfg.size, max_text=words))
        self.feats = self._features(train.images)  # per group (N, T_g, C_g) fp16 on the device
        self.images, self.val_images = train.images.to(device), val.images.to(device)  # for the pixel stem
        self.tokens = self.vocab.batch(targets, words).to(device)  # (N, words + 2)
        self.val_feats = self._features(val.images)
        self.val_targets = [c[0] for c in val.captions]
        self.val_tokens = self.vocab.batch(self.val_targets, words).to(device)
        self.n_train = len(train)

    def _features(self, images) -> list[torch.Tensor]:
        return [f.to(self.device, torch.float16) for f in image_features(self.ev, images, FEATURES)]

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {}  # one target per image, features fixed: nothing random

    def loss(self, model, idx, rnd):
        return model([f[idx].float() for f in self.feats], self.images[idx], self.tokens[idx], self.vocab.pad)

    @torch.no_grad()
    def validate(self, ema) -> dict:
        total, n = 0.0, 0
        for i in range(0, len(self.val_tokens), 256):
            f = [x[i:i + 256].float() for x in self.val_feats]
            t = self.val_tokens[i:i + 256]
            loss, _ = ema(f, self.val_images[i:i + 256], t, self.vocab.pad)
            k = int((t[:, 1:] != self.vocab.pad).sum())
            total, n = total + float(loss) * k, n + k
        m = min(VAL_DECODE, len(self.val_targets))
        got = self.writer(ema).write_features([x[:m].float() for x in self.val_feats], self.val_images[:m], beams=1)
        exact = sum(g == t for g, t in zip(got, self.val_targets[:m])) / max(m, 1)
        return {"val_loss": total / max(n, 1), "val_exact": exact}

    def writer(self, ema) -> CaptionWriter:
        return CaptionWriter(ema, self.vocab, self.ev, {"features": list(FEATURES)})

    @torch.no_grad()
    def samples(self, ema, step):
        """Eight held-out images, each above its generated caption (greedy)."""
        caps = self.writer(ema).write_features([x[:8].float() for x in self.val_feats], self.val_images[:8], beams=1)
        ema.train(False)
        return caption_sheet(self.val_images[:8], caps)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_captioner(folder, ema, self.vocab, self.ev, extra, dtype_of(self.cfg.save_dtype))


def caption_sheet(images: torch.Tensor, captions: list[str], width: int = 192) -> Image.Image:
    """uint8 images (N, 3, H, W) in a column, each beside its caption (for sample grids)."""
    H = images.shape[-1]
    sheet = Image.new("RGB", (H + width, H * len(captions)), "white")
    d = ImageDraw.Draw(sheet)
    for i, (im, cap) in enumerate(zip(images, captions)):
        sheet.paste(Image.fromarray(im.permute(1, 2, 0).cpu().numpy()), (0, i * H))
        words, lines = cap.split(), [""]
        for w in words:  # wrap at ~30 characters
            lines[-1] = f"{lines[-1]} {w}".strip() if len(lines[-1]) + len(w) < 30 else lines[-1]
            if lines[-1] and not lines[-1].endswith(w):
                lines.append(w)
        d.multiline_text((H + 4, i * H + 4), "\n".join(lines), fill="black")
    return sheet
