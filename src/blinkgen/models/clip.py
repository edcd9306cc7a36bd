"""Contrastive image encoder: a small CNN image tower aligned with the frozen MiniLM text tower.

Why this shape (LiT-style, "locked text"): the text side is MiniLM's pooled sentence embedding,
used as-is (384-d, L2-normalised), so the whole pair costs one small CNN to train and any caption
can be scored with the encoder every generator already loads. Only the image tower and the
temperature learn. (Zhai et al. 2022 lock the image tower; we lock the text tower because it is
the pretrained half we have.)

The image tower is a ResNet-style CNN: 64x64 -> 32 -> 16 -> 8 -> 4, then a head that keeps both
the global average (what is there) and a coarse 4x4 map of reduced channels (where it is: shapes
captions name left/right/above/below), projected to the text width and L2-normalised.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

TEXT_DIM = 384  # MiniLM-L6 pooled width; the image embedding lives in the same space
INIT_TEMPERATURE = 0.07  # CLIP's initial softmax temperature (Radford et al. 2021)
MAX_LOGIT_SCALE = 100.0  # CLIP clips the learned 1/temperature here so training stays stable
PIXEL_MEAN = 0.5  # images are scaled to [-1, 1]: (x / 255 - 0.5) / 0.5
PIXEL_STD = 0.5


@dataclass
class ImageEncoderConfig:
    image_size: int = 64
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 192])  # one per resolution
    blocks: int = 1  # residual blocks per resolution
    map_channels: int = 32  # channels of the 4x4 spatial map kept by the head
    embed_dim: int = TEXT_DIM

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def final_size(self) -> int:
        return self.image_size // 2 ** len(self.widths)


CLIP_PRESETS = {
    "tiny": ImageEncoderConfig(widths=[8, 16, 16, 16], map_channels=4),
    "S": ImageEncoderConfig(),
}


class _Block(nn.Module):
    """conv-BN-ReLU-conv-BN + identity. BatchNorm in eval mode is a fixed affine map, so an
    image's embedding never depends on its batch-mates."""

    def __init__(self, c: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        nn.init.zeros_(self.b2.weight)  # each block starts as the identity (Goyal et al. 2017)

    def forward(self, x):
        return F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ImageEncoder(nn.Module):
    """uint8 or float images (B, 3, H, W) -> unit embeddings (B, embed_dim)."""

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        layers: list[nn.Module] = []
        cin = 3
        for c in w:
            layers.append(_down(cin, c))
            layers.extend(_Block(c) for _ in range(cfg.blocks))
            cin = c
        self.body = nn.Sequential(*layers)
        s = cfg.final_size
        self.reduce = nn.Conv2d(w[-1], cfg.map_channels, 1)
        self.norm = nn.LayerNorm(w[-1] + cfg.map_channels * s * s)
        self.proj = nn.Linear(w[-1] + cfg.map_channels * s * s, cfg.embed_dim)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] (or float [0, 1]) at any size -> float [-1, 1] at cfg.image_size."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.cfg.image_size or x.shape[-2] != self.cfg.image_size:
            x = F.interpolate(x, size=(self.cfg.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        return (x - PIXEL_MEAN) / PIXEL_STD

    def stage_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature map after each resolution stage: [(B, widths[i], H / 2^(i+1), W / 2^(i+1))],
        e.g. for 64 px: 32x32, 16x16, 8x8, 4x4 (the last is what `forward` pools and projects)."""
        x, out = self.preprocess(images), []
        per_stage = 1 + self.cfg.blocks  # a strided conv, then the residual blocks
        for i, layer in enumerate(self.body):
            x = layer(x)
            if (i + 1) % per_stage == 0:
                out.append(x)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dim() == 4 and images.shape[1] == 3, f"images must be (B, 3, H, W), got {tuple(images.shape)}"
        return self.head(self.body(self.preprocess(images)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map (B, C, s, s) -> unit embeddings (B, embed_dim)."""
        pooled = x.mean(dim=(2, 3))  # (B, C): what is in the image
        where = self.reduce(x).flatten(1)  # (B, m * s * s): where it is
        z = self.proj(self.norm(torch.cat([pooled, where], dim=1)))  # (B, D)
        return F.normalize(z, dim=-1)


class ContrastiveModel(nn.Module):
    """The trainable half of the pair: image tower + learned log inverse temperature."""

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.image = ImageEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def logits(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B, D) unit text embeddings -> (B, B) image-to-text logits."""
        return self.scale() * self.image(images) @ F.normalize(text_emb.float(), dim=-1).T


def contrastive_loss(logits: torch.Tensor, caption_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): the mean of image->text and text->image cross-entropies.

    caption_ids (B,): entries with the same caption are all positives of each other (target mass
    split evenly among them), so a duplicate caption in the batch (two emoji styles of
    "grinning face", two shapes scenes with one caption) is not pushed apart as a negative."""
    B = logits.shape[0]
    if caption_ids is None:
        target = torch.eye(B, device=logits.device)
    else:
        target = (caption_ids[:, None] == caption_ids[None, :]).float()  # (B, B), symmetric
    target = target / target.sum(1, keepdim=True)
    li = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    lt = -(target * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return 0.5 * (li + lt)
