"""Distribution and alignment metrics on feature matrices (N, D).

Why these: Fréchet distance and KID compare a generated set with a real one as distributions;
precision/recall split that gap into fidelity (fakes land on the real manifold) and coverage
(the real manifold is reached); alignment and retrieval ask whether each image matches its own
prompt. All take plain features, so any encoder can feed them.

IMPORTANT: in blinkgen the features come from blinkgen's own small contrastive image encoder, not
from Inception-v3. Fréchet distances computed here are therefore NOT comparable with published
FID numbers (or with FDs from another encoder): compare runs only against each other, on the same
encoder checkpoint and the same reference set.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy import linalg

from blinkgen.errors import UserInputError

_CHUNK = 1024  # rows of a pairwise-distance block: 1024 x 10k float64 = 80 MB at most


def _features(x, name: str, min_rows: int = 1) -> np.ndarray:
    """torch or numpy (N, D) -> float64 numpy, with a clear error for anything else."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise UserInputError(f"{name} must be a (N, D) feature matrix, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise UserInputError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise UserInputError(f"{name} contains NaN or infinite values")
    return x


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise UserInputError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")


# ----------------------------------------------------------------------------- Fréchet distance
def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features, so a reference set is summarised once."""
    x = _features(x, "features", min_rows=2)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _real_sqrtm(m: np.ndarray) -> np.ndarray | None:
    """scipy's sqrtm, or None where it warns (singular / ill-conditioned), returns non-finite
    values, or an imaginary part that is more than rounding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            r = linalg.sqrtm(m)
        except (linalg.LinAlgWarning, linalg.LinAlgError):
            return None
    if not np.isfinite(r).all():
        return None
    if np.iscomplexobj(r):
        if np.abs(r.imag).max() > 1e-3 * max(np.abs(r).max(), 1.0):
            return None
        r = r.real
    return r


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    """tr sqrtm(s1 @ s2). The square root of a product of two PSD matrices is real in exact
    arithmetic, but singular covariances (N < D, collinear features) make sqrtm inaccurate or
    complex. Then, as pytorch-fid does, add eps to the diagonals; failing that, use the similar
    symmetric matrix sqrt(s1) s2 sqrt(s1), whose eigenvalues are real and >= 0."""
    covmean = _real_sqrtm(s1 @ s2)
    if covmean is None:
        offset = eps * np.eye(s1.shape[0])
        covmean = _real_sqrtm((s1 + offset) @ (s2 + offset))
    if covmean is not None:
        return float(np.trace(covmean))
    w, v = linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the 2-Wasserstein distance between the
    Gaussians N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; Heusel et al. 2017)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise UserInputError(f"statistics shapes do not match: {mu1.shape} {s1.shape} {mu2.shape} {s2.shape}")
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2, eps)
    return max(float(fd), 0.0)  # tiny negatives are rounding, a distance is >= 0


def frechet_distance(a, b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to features a (N, D) and b (M, D).

    Computed in blinkgen's own contrastive embedding space, NOT Inception-v3: the number is not
    comparable with published FIDs. It is biased upwards for small N (fit on >= a few thousand
    samples to compare runs)."""
    a, b = _features(a, "a", 2), _features(b, "b", 2)
    _same_dim(a, b)
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b), eps=eps)


# ----------------------------------------------------------------------------- KID
class KID(NamedTuple):
    mean: float
    std: float


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / D + 1)^3, the kernel of Binkowski et al. 2018."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> KID:
    """Kernel Inception Distance (Binkowski et al. 2018) in blinkgen's embedding space: the
    unbiased estimate of MMD^2 with the cubic polynomial kernel, averaged over random subsets
    (mean, std over subsets). Unbiased, so it can be slightly negative when a and b come from
    the same distribution; unlike FD it has no small-sample bias. Not comparable with published
    KIDs (different features)."""
    a, b = _features(a, "a", 2), _features(b, "b", 2)
    _same_dim(a, b)
    if subsets < 1 or subset_size < 2:
        raise UserInputError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    out = np.empty(subsets)
    for s in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        off = m * (m - 1)  # the diagonals k(x_i, x_i) are left out: that is what makes it unbiased
        out[s] = ((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                  - 2 * kxy.mean())
    return KID(float(out.mean()), float(out.std()))


# ----------------------------------------------------------------------------- precision / recall
def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None] - 2 * x @ y.T, 0.0)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    radii = np.empty(len(x))
    for i in range(0, len(x), _CHUNK):
        d = _sq_dists(x[i:i + _CHUNK], x)
        radii[i:i + _CHUNK] = np.partition(d, k, axis=1)[:, k]  # index 0 is the row itself
    return radii


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each point lies in at least one ball (centre, radius) of the manifold estimate."""
    hit = np.empty(len(points), dtype=bool)
    for i in range(0, len(points), _CHUNK):
        hit[i:i + _CHUNK] = (_sq_dists(points[i:i + _CHUNK], centres) <= radii[None]).any(1)
    return hit


def precision_recall(real, fake, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019). Each set's manifold is the union
    of balls around its samples reaching their k-th nearest neighbour. precision = share of fakes
    inside the real manifold (fidelity); recall = share of reals inside the fake manifold
    (coverage, i.e. no mode dropping)."""
    real, fake = _features(real, "real", k + 1), _features(fake, "fake", k + 1)
    _same_dim(real, fake)
    if k < 1:
        raise UserInputError(f"k must be >= 1, got {k}")
    precision = _inside(fake, real, _knn_radii(real, k)).mean()
    recall = _inside(real, fake, _knn_radii(fake, k)).mean()
    return {"precision": float(precision), "recall": float(recall)}


# ----------------------------------------------------------------------------- text-image agreement
def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def alignment(image_emb, text_emb) -> float:
    """Mean cosine similarity of matched (image i, prompt i) pairs, a CLIP-score-like number in
    [-1, 1]; meaningful only relative to other runs with the same encoder pair."""
    im, tx = _features(image_emb, "image_emb"), _features(text_emb, "text_emb")
    if im.shape != tx.shape:
        raise UserInputError(f"image and text embeddings must match in shape: {im.shape} vs {tx.shape}")
    return float((_unit_rows(im) * _unit_rows(tx)).sum(1).mean())


def retrieval_accuracy(image_emb, text_emb, k: int = 1) -> float:
    """Share of images whose own prompt is among their k most similar of the N prompts. Ties
    count against the image, so collapsed (all-equal) embeddings score 0, not 1. Chance is k/N."""
    im, tx = _features(image_emb, "image_emb"), _features(text_emb, "text_emb")
    if im.shape != tx.shape:
        raise UserInputError(f"image and text embeddings must match in shape: {im.shape} vs {tx.shape}")
    if not 1 <= k <= len(im):
        raise UserInputError(f"k must be in 1..{len(im)}, got {k}")
    im, tx = _unit_rows(im), _unit_rows(tx)
    hits = np.empty(len(im), dtype=bool)
    for i in range(0, len(im), _CHUNK):
        sim = im[i:i + _CHUNK] @ tx.T  # (chunk, N)
        own = sim[np.arange(len(sim)), np.arange(i, i + len(sim))]
        rivals = (sim >= own[:, None]).sum(1) - 1  # other prompts at least as similar
        hits[i:i + _CHUNK] = rivals < k
    return float(hits.mean())
