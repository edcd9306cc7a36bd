"""The nearest-neighbour recognisability check: is a generated image closer to its own emoji than
to the thousands of others?

For each prompt naming an emoji ("red heart", "flag: Japan"), the generated image is compared in
pixel space (both sides area-downsampled to 32x32 RGB, Euclidean distance) with every image of a
reference set (the emoji training folder, 7,572 images); a hit is one of the prompt's own images
(any image with the prompt among its captions, either style) among the k = 5 nearest. It needs
no learned model, so it cannot be fooled the way an embedding that keys on colour can: a red blob
is near many red emoji, and a hit needs the right drawing. It does reward memorising the
training image, which is what a default model of a closed emoji vocabulary is for.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.folder import normalize_caption
from ..data.types import ImageCaptionSet
from ..errors import UserInputError

SIDE = 32  # comparison resolution: fine enough for a drawing, coarse enough to forgive a pixel shift
K = 5


def _pixels(images, side: int) -> torch.Tensor:
    """PIL images, (N, H, W, 3) arrays or (N, 3, H, W) uint8 tensors -> (N, 3*side*side) float in [0, 1]."""
    if isinstance(images, torch.Tensor):
        x = images
    else:
        x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im, dtype=np.uint8)
                                       for im in images])).permute(0, 3, 1, 2)
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserInputError(f"images must be (N, 3, H, W) or a list of RGB images, got {tuple(x.shape)}")
    x = F.adaptive_avg_pool2d(x.float() / 255.0, side)  # area average for any integer ratio
    return x.flatten(1)


def own_images(prompt: str, reference: ImageCaptionSet) -> list[int]:
    """Indices of the reference images that have `prompt` among their captions (case-insensitive)."""
    want = normalize_caption(prompt).lower()
    return [i for i, caps in enumerate(reference.captions) if any(c.lower() == want for c in caps)]


def nearest_neighbour_hits(images, prompts: list[str], reference: ImageCaptionSet, k: int = K,
                           side: int = SIDE) -> dict:
    """Hit count and per-prompt detail of the check above.

    images: one per prompt (N); prompts: (N) emoji names; reference: the emoji folder set.
    Returns {"hits", "n", "rate", "k", "side", "per_prompt": [{"prompt", "hit", "rank", "neighbours"}]},
    where rank is the 1-based rank of the nearest own image (None if the prompt names no reference
    image). Raises UserInputError on a length mismatch or when no prompt names a reference image."""
    if len(images) != len(prompts):
        raise UserInputError(f"{len(images)} images but {len(prompts)} prompts")
    gen = _pixels(images, side)  # (N, D)
    ref = _pixels(reference.images, side)  # (R, D)
    d = torch.cdist(gen, ref)  # (N, R)
    order = d.argsort(dim=1)
    rows, hits, named = [], 0, 0
    for i, p in enumerate(prompts):
        own = set(own_images(p, reference))
        ranked = order[i].tolist()
        rank = next((r + 1 for r, j in enumerate(ranked) if j in own), None) if own else None
        hit = rank is not None and rank <= k
        hits += hit
        named += bool(own)
        rows.append({"prompt": p, "hit": hit, "rank": rank,
                     "neighbours": [reference.captions[j][0] for j in ranked[:k]]})
    if not named:
        raise UserInputError("no prompt names an image of the reference set; is it the emoji folder?")
    return {"hits": hits, "n": len(prompts), "named": named, "rate": hits / len(prompts), "k": k, "side": side,
            "per_prompt": rows}
