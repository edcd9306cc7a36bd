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
    (training draws one per step); names[i]: file name or id, for reports.

    groups[i] (optional): images that show the same subject share a group id (an emoji's skin
    tones and styles, a shape scene and its mirror), so training can draw a subject uniformly and
    then one of its variants; "" or None = the image is its own group.
    styles[i] (optional): the style phrase of image i as a caption says it ("twemoji"); "" = none.
    Training adds "<caption> in <style> style" on most draws (see train/captions.py)."""

    images: torch.Tensor
    captions: list[list[str]]
    names: list[str]
    report: LoadReport = field(default_factory=LoadReport)
    groups: list[str] | None = None
    styles: list[str] | None = None
    parts: list[int] | None = None  # which part of an 'A+B' spec each image came from (None: one part)

    def __post_init__(self):
        n = self.images.shape[0]
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4 and self.images.shape[1] == 3, \
            f"images must be (N, 3, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
        assert len(self.captions) == n and len(self.names) == n, "images, captions and names differ in length"
        assert all(len(c) > 0 for c in self.captions), "every image needs at least one caption"
        assert self.groups is None or len(self.groups) == n, "groups and images differ in length"
        assert self.styles is None or len(self.styles) == n, "styles and images differ in length"
        assert self.parts is None or len(self.parts) == n, "parts and images differ in length"

    def group_ids(self) -> list[str]:
        """Every image's group, the image's own name where it has none."""
        g = self.groups or [""] * len(self)
        return [gi or f"image:{name}" for gi, name in zip(g, self.names)]

    def part_list(self) -> list[int]:
        return list(self.parts) if self.parts is not None else [0] * len(self)

    def style_list(self) -> list[str]:
        return list(self.styles) if self.styles is not None else [""] * len(self)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def subset(self, idx: list[int]) -> "ImageCaptionSet":
        return ImageCaptionSet(self.images[idx], [self.captions[i] for i in idx],
                               [self.names[i] for i in idx], self.report,
                               None if self.groups is None else [self.groups[i] for i in idx],
                               None if self.styles is None else [self.styles[i] for i in idx],
                               None if self.parts is None else [self.parts[i] for i in idx])

    @staticmethod
    def concat(sets: list["ImageCaptionSet"]) -> "ImageCaptionSet":
        rep = LoadReport(loaded=sum(s.report.loaded for s in sets))
        for s in sets:
            for reason, names in s.report.skipped.items():
                rep.skipped.setdefault(reason, []).extend(names)
        groups = None if all(s.groups is None for s in sets) else \
            [f"{k}/{g}" for k, s in enumerate(sets) for g in s.group_ids()]  # parts never share a group
        styles = None if all(s.styles is None for s in sets) else [t for s in sets for t in s.style_list()]
        return ImageCaptionSet(torch.cat([s.images for s in sets]),
                               [c for s in sets for c in s.captions],
                               [n for s in sets for n in s.names], rep, groups, styles,
                               [k for k, s in enumerate(sets) for _ in range(len(s))])
