"""The in-memory dataset every loader returns and every trainer consumes.

Why in memory: the datasets blinkgen targets (icons, emoji, procedural shapes) are thousands of
small images; a uint8 tensor of 10k 64x64 images is 120 MB, and keeping it whole makes data order,
resume and multi-process sharding exact and simple.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoadReport:
    """What a loader kept and skipped, with file names, so a user can fix their data."""

    loaded: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> file names

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self, max_names: int = 5) -> str:
        lines = [f"loaded {self.loaded} images, skipped {self.n_skipped}"]
        for reason, names in sorted(self.skipped.items()):
            shown = ", ".join(names[:max_names]) + (" ..." if len(names) > max_names else "")
            lines.append(f"  {reason}: {len(names)} ({shown})")
        return "\n".join(lines)


@dataclass
class ImageCaptionSet:
    """images: (N, 3, H, W) uint8 RGB; captions[i]: one or more non-empty captions for image i
    (training draws one per step); names[i]: file name or id, for reports."""

    images: torch.Tensor
    captions: list[list[str]]
    names: list[str]
    report: LoadReport = field(default_factory=LoadReport)

    def __post_init__(self):
        n = self.images.shape[0]
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4 and self.images.shape[1] == 3, \
            f"images must be (N, 3, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
        assert len(self.captions) == n and len(self.names) == n, "images, captions and names differ in length"
        assert all(len(c) > 0 for c in self.captions), "every image needs at least one caption"

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def subset(self, idx: list[int]) -> "ImageCaptionSet":
        return ImageCaptionSet(self.images[idx], [self.captions[i] for i in idx],
                               [self.names[i] for i in idx], self.report)

    @staticmethod
    def concat(sets: list["ImageCaptionSet"]) -> "ImageCaptionSet":
        rep = LoadReport(loaded=sum(s.report.loaded for s in sets))
        for s in sets:
            for reason, names in s.report.skipped.items():
                rep.skipped.setdefault(reason, []).extend(names)
        return ImageCaptionSet(torch.cat([s.images for s in sets]),
                               [c for s in sets for c in s.captions],
                               [n for s in sets for n in s.names], rep)
