"""Variation seeds: the starting randomness of two seeds mixed by spherical interpolation, so
"this image, but slightly different" is one number (the strength) away from the original.

Why slerp, not a straight mix (after: Shoemake 1985, "Animating rotation with quaternion curves";
the variation seeds / "subseeds" of Stable Diffusion web UIs): two independent standard normal
draws in d dimensions are almost orthogonal with norm ~ sqrt(d). A straight mix (1-a) x + a y has
norm ~ sqrt((1-a)^2 + a^2) sqrt(d), about 0.71 sqrt(d) at a = 0.5 -- noise no network was trained
on, which comes out washed out. Moving along the great circle keeps the norm, so every mix is
again a typical draw.

Each row is mixed on its own (the angle is per sample), so a varied image still depends only on
its own request, never on its batch-mates. Strength 0 returns the base row and 1 the variation
row exactly (no rounding on the way), so strength 0 reproduces the base image bit for bit.

The AR family's randomness is uniforms in [0, 1) (one per token draw): they are mapped to normals
by the inverse normal CDF, mixed the same way, and mapped back (`vary_uniform`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

PARALLEL_EPS = 1e-6  # |cos angle| above 1 - this: the rows are (anti)parallel; mix linearly
UNIFORM_EPS = 1e-7  # uniforms are clamped into (eps, 1 - eps) before the inverse CDF (0 -> -inf)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of each row: a, b (B, ...) float tensors of the same shape, t in
    [0, 1] -> (B, ...) float32. Row i moves from a[i] (t = 0, returned exactly) to b[i] (t = 1,
    exactly) along the great circle through them, with the norm interpolated linearly; rows at an
    angle of ~0 or ~pi fall back to a linear mix. ValueError for mismatched shapes or t outside [0, 1]."""
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"slerp t must be in [0, 1], got {t}")
    a, b = a.float(), b.float()
    if t == 0.0:
        return a.clone()
    if t == 1.0:
        return b.clone()
    B = a.shape[0]
    fa, fb = a.reshape(B, -1), b.reshape(B, -1)  # (B, d)
    na, nb = fa.norm(dim=1, keepdim=True), fb.norm(dim=1, keepdim=True)  # (B, 1)
    ua, ub = fa / na.clamp_min(1e-12), fb / nb.clamp_min(1e-12)
    cos = (ua * ub).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)  # (B, 1)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so.clamp_min(1e-12)
    norm = (1 - t) * na + t * nb
    curved = direction * norm
    straight = (1 - t) * fa + t * fb
    out = torch.where(cos.abs() > 1 - PARALLEL_EPS, straight, curved)  # (B, d)
    return out.reshape(a.shape)


Variation = tuple[int, float] | None  # (variation seed, strength) of one row, or None


def vary_gaussian(base: torch.Tensor, variations: Sequence[Variation],
                  draw: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
    """base (B, ...) standard normal noise, row b drawn from request b's seed; variations: one
    entry per row; draw(seeds) -> the same kind of noise for those seeds (each row from its own
    generator). Rows with a variation become slerp(base row, draw(variation seed) row, strength);
    the others are returned untouched. -> (B, ...) on base's device and dtype."""
    rows = [i for i, v in enumerate(variations) if v is not None]
    if len(variations) != base.shape[0]:
        raise ValueError(f"{len(variations)} variations for {base.shape[0]} rows")
    if not rows:
        return base
    other = draw([variations[i][0] for i in rows]).to(base.device)
    out = base.clone()
    for j, i in enumerate(rows):
        out[i] = slerp(base[i : i + 1], other[j : j + 1], variations[i][1])[0].to(base.dtype)
    return out


def vary_uniform(base: torch.Tensor, variations: Sequence[Variation],
                 draw: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
    """As `vary_gaussian` for uniforms in [0, 1): normals by the inverse CDF (ndtri), slerp, back
    by the CDF (ndtr). Strength 0 and 1 return the base / variation rows exactly."""
    def to_normal(u: torch.Tensor) -> torch.Tensor:
        return torch.special.ndtri(u.double().clamp(UNIFORM_EPS, 1 - UNIFORM_EPS))

    rows = [i for i, v in enumerate(variations) if v is not None]
    if len(variations) != base.shape[0]:
        raise ValueError(f"{len(variations)} variations for {base.shape[0]} rows")
    if not rows:
        return base
    other = draw([variations[i][0] for i in rows]).to(base.device)
    out = base.clone()
    for j, i in enumerate(rows):
        t = variations[i][1]
        if t == 0.0:
            continue
        if t == 1.0:
            out[i] = other[j]
            continue
        z = slerp(to_normal(base[i : i + 1]).float(), to_normal(other[j : j + 1]).float(), t)
        out[i] = torch.special.ndtr(z.double())[0].to(base.dtype).clamp(0.0, 1.0 - UNIFORM_EPS)
    return out
