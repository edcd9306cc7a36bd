"""Exact compositional checker for the `shapes` dataset (a GenEval-like score without a detector).

Why: the shapes world is known in closed form (palette, shapes, size classes, relations), so an
image can be read back by plain geometry instead of a learned detector, and the score means the
same thing on every machine. The reading has four steps:

1. background = the per-channel median of the border ring, named if near a palette background.
2. every pixel is explained as a blend  background + alpha * (colour - background)  for the
   colour whose blend line passes nearest; alpha >= 0.5 marks the pixel as that colour. Blends
   are what anti-aliasing and blur produce, so a blurred red edge on white stays "red" instead of
   becoming "pink", and the alpha = 0.5 contour recovers the shape's true outline.
3. connected components per colour; tiny specks and edge slivers without a solid core are dropped.
4. shape: a triangle by the skew of its mass profile, then circle vs square by fill ratio
   (soft area / peak chords: pi/4 vs 1); size from the soft area, relations from mass centres.

Each caption attribute (colour, shape, count, size, relation, background) is scored on its own,
and `overall` asks for one assignment of detected objects to caption objects that satisfies all.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from blinkgen.data import shapes as S
from blinkgen.errors import UserInputError

_NAMES = list(S.COLOURS)
_PALETTE = np.array([S.COLOURS[c] for c in _NAMES], dtype=np.float32)  # (K, 3)
_BG_NAMES = list(S.BACKGROUNDS)
_BG_PALETTE = np.array([S.BACKGROUNDS[c] for c in _BG_NAMES], dtype=np.float32)
BG_TOLERANCE = 60.0      # RGB distance within which a border colour is named as a background
RESIDUAL_TOLERANCE = 70.0  # a pixel farther than this from every blend line is no palette colour
MIN_AREA_FRACTION = 0.005  # components smaller than this share of the image are specks
CORE_ALPHA, CORE_FRACTION = 0.8, 0.2  # a real object has a solid core; a blurred edge sliver not
# A triangle's mass piles up at its base: the skewness of its profile along its axis is -0.57
# (density growing linearly), a circle's or square's is 0. Measured on the alpha >= 0.5 pixels
# only (halo noise would dominate a third moment); blur trims the corners but keeps the profile
# base-heavy (about -0.3 at the worst blur tested), where the outline's fill ratio would not.
TRIANGLE_SKEW = 0.25
FILL_CIRCLE_MAX = 0.895  # see _classify: circle pi/4 = 0.785, square 1; blurred 32 px: <0.885 vs >0.905
IDEAL_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}


@dataclass
class Detected:
    """One object read from an image; box = (x0, y0, x1, y1) inclusive bounds of its alpha >= 0.5
    pixels."""

    colour: str
    shape: str
    size: str
    box: tuple[int, int, int, int]
    fill: float
    centre: tuple[float, float]  # (x, y) centre of mass

    @property
    def key(self) -> tuple[str, str]:
        return self.colour, self.shape


@dataclass
class CheckResult:
    """Per-attribute verdicts; None where the caption does not ask (no size, relation or
    background named). `objects` and `background_seen` say what was read, for debugging."""

    colour: bool
    shape: bool
    count: bool
    size: bool | None
    relation: bool | None
    background: bool | None
    overall: bool
    objects: list[Detected] = field(default_factory=list)
    background_seen: str | None = None

    ATTRIBUTES = ("colour", "shape", "count", "size", "relation", "background", "overall")


def _as_array(image) -> np.ndarray:
    """PIL image, numpy or torch array, (H, W, 3) or (3, H, W), uint8 or float in [0, 1]
    -> float32 (H, W, 3) in [0, 255]."""
    if hasattr(image, "convert"):  # PIL: any mode, transparency on white (the shared reader's rule)
        from ..data.image_io import to_rgb

        image = to_rgb(image)
    if hasattr(image, "detach"):  # torch, without importing it here
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise UserInputError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {a.shape}")
    a = a.astype(np.float32)
    if not np.issubdtype(np.asarray(image).dtype, np.integer) and a.max() <= 1.0:
        a = a * 255.0
    return a


def _background(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])  # (4H-4, 3)
    bg = np.median(border, axis=0)
    d = np.linalg.norm(_BG_PALETTE - bg, axis=1)
    return bg, (_BG_NAMES[int(d.argmin())] if d.min() < BG_TOLERANCE else None)


def _blend_explain(img: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel and palette colour c: alpha along bg -> c and the distance to that line.
    Returns best colour index (H, W), its alpha (H, W) and all alphas (K, H, W)."""
    v = _PALETTE - bg  # (K, 3)
    vv = np.maximum((v * v).sum(1), 1e-6)  # (K,)
    p = img - bg  # (H, W, 3)
    pv = np.einsum("hwc,kc->khw", p, v)  # (K, H, W)
    alpha = np.minimum(pv / vv[:, None, None], 1.0)  # (K, H, W)
    # |p - alpha v|^2 expanded, to avoid a (K, H, W, 3) temporary
    resid2 = (p * p).sum(-1)[None] - 2 * alpha * pv + alpha ** 2 * vv[:, None, None]
    resid2 = np.where(alpha > 0, resid2, np.inf)  # a line only explains pixels on the colour's side
    best = resid2.argmin(0)
    best_alpha = np.take_along_axis(alpha, best[None], 0)[0]
    ok = np.take_along_axis(resid2, best[None], 0)[0] < RESIDUAL_TOLERANCE ** 2
    best_alpha = np.where(ok, best_alpha, 0.0)
    return best, best_alpha, alpha


_EIGHT = np.ones((3, 3), dtype=bool)


HALO = 3  # pixels around a component whose alpha still counts: blur spreads mass outwards


def _skew(profile: np.ndarray) -> float:
    """Standardised third moment of a 1-D mass profile."""
    x = np.arange(len(profile), dtype=np.float64)
    m = profile.sum()
    if m <= 0:
        return 0.0
    mu = (profile * x).sum() / m
    var = (profile * (x - mu) ** 2).sum() / m
    return float((profile * (x - mu) ** 3).sum() / m / max(var, 1e-9) ** 1.5)


def _classify(wts: np.ndarray, core: np.ndarray, image_side: int) -> tuple[str, str, float, tuple[float, float]]:
    """Shape, size, fill and mass centre (x, y) from a soft mask (alpha weights over component
    and halo, window coords) and the component alone (core, less noisy: used for skew).
    fill = soft area / (peak column mass * peak row mass): square 1, circle pi/4, triangle 1/2;
    all three terms are (nearly) unchanged by blur, unlike the outline's bounding box."""
    soft = float(wts.sum())
    px, py = wts.sum(0), wts.sum(1)  # (W,), (H,) mass profiles
    fill = soft / max(float(px.max() * py.max()), 1e-9)
    if max(abs(_skew(core.sum(0))), abs(_skew(core.sum(1)))) > TRIANGLE_SKEW:
        shape = "triangle"
    else:
        shape = "circle" if fill < FILL_CIRCLE_MAX else "square"
    extent = np.sqrt(max(soft, 0.0) / IDEAL_FILL[shape])  # the drawn box side, blur or not
    size = "large" if extent / image_side >= S.SIZE_THRESHOLD else "small"
    m = max(soft, 1e-9)
    centre = (float((px * np.arange(len(px))).sum() / m), float((py * np.arange(len(py))).sum() / m))
    return shape, size, fill, centre


def detect(image) -> tuple[list[Detected], str | None]:
    """Read the objects and the background name (None if unnamed) from an image."""
    img = _as_array(image)
    h, w = img.shape[:2]
    bg, bg_name = _background(img)
    best, best_alpha, alpha = _blend_explain(img, bg)
    owned = best_alpha >= 0.5
    min_area = MIN_AREA_FRACTION * h * w
    found = []
    for k, name in enumerate(_NAMES):
        mask = owned & (best == k)
        if mask.sum() < min_area:
            continue
        labels, _ = ndimage.label(mask, structure=_EIGHT)
        for i, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
            comp = labels[ys, xs] == i
            area = int(comp.sum())
            if area < min_area or (best_alpha[ys, xs][comp] >= CORE_ALPHA).sum() < CORE_FRACTION * area:
                continue
            # Soft mask: alpha over the component and its halo (minus other objects), so blur and
            # anti-aliasing do not shrink it. Alpha is not clipped at 0 there: background noise
            # then averages out instead of adding mass.
            y0, x0 = max(ys.start - HALO, 0), max(xs.start - HALO, 0)
            win = (slice(y0, ys.stop + HALO), slice(x0, xs.stop + HALO))
            mine = labels[win] == i
            halo = ndimage.binary_dilation(mine, _EIGHT, iterations=HALO) & ~(owned[win] & ~mine)
            wts = np.where(halo, np.clip(alpha[k][win], -1.0, 1.0), 0.0)
            core = np.where(mine, np.clip(alpha[k][win], 0.0, 1.0), 0.0)
            shape, size, fill, (cx, cy) = _classify(wts, core, max(h, w))
            box = (xs.start, ys.start, xs.stop - 1, ys.stop - 1)
            found.append(Detected(name, shape, size, box, fill, (x0 + cx, y0 + cy)))
    return found, bg_name


def _relation_ok(relation: str, a: Detected, b: Detected) -> bool:
    """Lenient on purpose (the renderer is strict): the relation's axis dominates."""
    main, cross = S.relation_offsets(relation, a.centre, b.centre)
    return main > 0 and abs(cross) < main


def check(image, caption: str) -> CheckResult:
    """Verify one image against one caption of the shapes grammar (UserInputError otherwise)."""
    try:
        scene = S.parse_caption(caption)
    except ValueError as e:
        raise UserInputError(str(e)) from None
    found, bg_seen = detect(image)
    want = [o for o in scene.objects for _ in range(o.count)]  # one entry per object
    colour = {d.colour for d in found} == {o.colour for o in want}
    shape = {d.shape for d in found} == {o.shape for o in want}
    seen = Counter(d.key for d in found)
    count = len(found) == len(want) and all(seen[o.key] == o.count for o in scene.objects)
    sized = [o for o in scene.objects if o.size]
    size = None
    if sized:
        size = all(seen[o.key] > 0 and all(d.size == o.size for d in found if d.key == o.key) for o in sized)
    relation = None
    if scene.relation:
        a, b = scene.objects
        relation = any(_relation_ok(scene.relation, da, db) for da in found for db in found
                       if da is not db and da.key == a.key and db.key == b.key)
    background = None if scene.background is None else bg_seen == scene.background
    overall = len(found) == len(want) and background is not False and any(
        all(d.key == o.key and (o.size is None or d.size == o.size) for d, o in zip(perm, want))
        and (not scene.relation or _relation_ok(scene.relation, perm[0], perm[1]))
        for perm in itertools.permutations(found))
    return CheckResult(colour, shape, count, size, relation, background, overall, found, bg_seen)


def placement(found: list[Detected], scene: S.Scene) -> bool | None:
    """Where, apart from what: for a relation scene whose two objects differ in colour, True when
    some detected object of the first colour and one of the second stand in the relation, whatever
    their shapes and sizes (so a scene drawn in the right places with a wrong shape still counts).
    None for scenes without a relation or with two objects of one colour. found: `detect`'s list."""
    if not scene.relation or scene.objects[0].colour == scene.objects[1].colour:
        return None
    a, b = (o.colour for o in scene.objects)
    return any(_relation_ok(scene.relation, da, db) for da in found for db in found
               if da is not db and da.colour == a and db.colour == b)


def check_placement(image, caption: str) -> bool | None:
    """`placement` of one image against one caption of the shapes grammar (UserInputError
    otherwise)."""
    try:
        scene = S.parse_caption(caption)
    except ValueError as e:
        raise UserInputError(str(e)) from None
    return placement(detect(image)[0], scene) if scene.relation else None


def score(images, captions: list[str]) -> dict:
    """Accuracy per attribute over the captions that ask for it, plus `overall` and counts
    `n_<attribute>`. images: a sequence of images, or one (N, ...) array/tensor."""
    if len(images) != len(captions):
        raise UserInputError(f"{len(images)} images but {len(captions)} captions")
    hits: dict[str, list[bool]] = {a: [] for a in CheckResult.ATTRIBUTES}
    for image, text in zip(images, captions):
        r = check(image, text)
        for a in CheckResult.ATTRIBUTES:
            if getattr(r, a) is not None:
                hits[a].append(bool(getattr(r, a)))
    out: dict = {a: (float(np.mean(v)) if v else float("nan")) for a, v in hits.items()}
    out.update({f"n_{a}": len(v) for a, v in hits.items()})
    return out
