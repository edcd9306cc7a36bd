"""Augmentations that keep identity: a picture's caption must stay true of the augmented picture.

Emoji get none: a colour change turns a red heart orange, and a mirror turns the left-facing
emoji of a direction (pointing, running, the arrows) into a different emoji with another name.
Shapes scenes get a horizontal mirror with "left of" and "right of" swapped in every caption,
and a vertical mirror with "above"/"below" swapped when the scene has no triangle (our triangle
points up; mirrored it is no shape of the grammar). A caption that the shapes grammar cannot
read is never mirrored, so user folders pass through unchanged.

Each mirror joins its original's group, so balanced sampling (train/order.py) draws a scene once
and then one of its versions.
"""
from __future__ import annotations

import re

import torch

from blinkgen.data.shapes import parse_caption
from blinkgen.data.types import ImageCaptionSet

AUGMENTS = ("none", "mirror")
_SWAP_H = {"left of": "right of", "right of": "left of"}
_SWAP_V = {"above": "below", "below": "above"}


def _swap(caption: str, table: dict[str, str]) -> str:
    """Swap each relation word for its mirror image in one pass ("left of" <-> "right of")."""
    pattern = re.compile("|".join(re.escape(k) for k in table))
    return pattern.sub(lambda m: table[m.group(0)], caption)


def _mirrorable(captions: list[str]) -> tuple[bool, bool]:
    """(horizontal ok, vertical ok) for an image with these captions: every caption must parse."""
    scenes = []
    for c in captions:
        try:
            scenes.append(parse_caption(c))
        except ValueError:
            return False, False
    vertical = not any(o.shape == "triangle" for s in scenes for o in s.objects)
    return True, vertical


def mirror_shapes(ds: ImageCaptionSet) -> ImageCaptionSet:
    """`ds` plus the mirrored copies of its shapes scenes (see the module docstring).

    Returns a new set: the originals first, in order, then the mirrors; groups tie each mirror to
    its original. Images: (N, 3, H, W) uint8, flipped along W (horizontal) or H (vertical)."""
    groups = ds.group_ids()
    styles = ds.style_list()
    extra_idx, extra_caps, extra_names, extra_groups, flips = [], [], [], [], []
    for i, caps in enumerate(ds.captions):
        h, v = _mirrorable(caps)
        if h:
            extra_idx.append(i); flips.append(2)  # (3, H, W): dim 2 is W
            extra_caps.append([_swap(c, _SWAP_H) for c in caps])
            extra_names.append(f"{ds.names[i]}#mirror-h"); extra_groups.append(groups[i])
        if v:
            extra_idx.append(i); flips.append(1)  # dim 1 is H
            extra_caps.append([_swap(c, _SWAP_V) for c in caps])
            extra_names.append(f"{ds.names[i]}#mirror-v"); extra_groups.append(groups[i])
    if not extra_idx:
        return ds
    mirrored = torch.stack([ds.images[i].flip(dims=(f,)) for i, f in zip(extra_idx, flips)])
    parts = ds.part_list()
    return ImageCaptionSet(torch.cat([ds.images, mirrored]), ds.captions + extra_caps, ds.names + extra_names,
                           ds.report, groups + extra_groups, styles + [styles[i] for i in extra_idx],
                           parts + [parts[i] for i in extra_idx])


def augment(ds: ImageCaptionSet, name: str) -> ImageCaptionSet:
    """Apply the named augmentation ("none" or "mirror")."""
    if name == "none":
        return ds
    if name == "mirror":
        return mirror_shapes(ds)
    raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTS}")
