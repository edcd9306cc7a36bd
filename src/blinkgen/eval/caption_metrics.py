"""Comparing a written caption with the one it should be: for shapes captions, scene by scene
through the shapes grammar's parser (data/shapes.py parse_caption); for any caption, exact match
and MiniLM similarity. Used by the captioner bench and by `blinkgen eval` ("caption the generated
image and compare with the prompt").
"""
from __future__ import annotations

from ..data import shapes as S

ATTRIBUTES = ("colour", "shape", "count", "size", "relation", "background")
_MIRROR = {"right of": "left of", "below": "above"}


def canonical(scene: S.Scene) -> S.Scene:
    """One spelling per image: "B right of A" -> "A left of B", "B below A" -> "A above B"; groups
    joined by "and" in (colour, shape) order."""
    if scene.relation in _MIRROR:
        return S.Scene(scene.objects[::-1], _MIRROR[scene.relation], scene.background)
    if scene.relation is None:
        return S.Scene(tuple(sorted(scene.objects, key=lambda o: o.key)), None, scene.background)
    return scene


def parse_or_none(text: str) -> S.Scene | None:
    try:
        return S.parse_caption(text)
    except ValueError:
        return None


def scene_agreement(written: str, truth: str) -> dict | None:
    """None if `truth` is not a shapes caption. Else {"parses": the written caption reads in the
    grammar, "same": it describes the same scene (canonical forms equal), and per attribute
    (ATTRIBUTES) True/False, or None where the truth does not say (no relation, no background)}.
    Objects are compared in canonical order; an object the written caption lacks is wrong in
    every attribute."""
    t = parse_or_none(truth)
    if t is None:
        return None
    w = parse_or_none(written)
    out = {"parses": w is not None, "same": False}
    t = canonical(t)
    if w is None:
        return {**out, **{a: (False if _says(t, a) else None) for a in ATTRIBUTES}}
    w = canonical(w)
    out["same"] = w == t
    pairs = list(zip(t.objects, w.objects)) + [(o, None) for o in t.objects[len(w.objects):]]
    for a in ("colour", "shape", "count", "size"):
        if not _says(t, a):
            out[a] = None
            continue
        out[a] = all(g is not None and getattr(o, a) == getattr(g, a) for o, g in pairs if getattr(o, a) is not None) \
            and len(w.objects) == len(t.objects)
    out["relation"] = (w.relation == t.relation) if t.relation else None
    out["background"] = (w.background == t.background) if t.background else None
    return out


def _says(scene: S.Scene, attr: str) -> bool:
    if attr == "relation":
        return scene.relation is not None
    if attr == "background":
        return scene.background is not None
    return any(getattr(o, attr) is not None for o in scene.objects)


def summarise(rows: list[dict]) -> dict:
    """Rates over scene_agreement rows: parses, same, and each attribute over the rows that say it."""
    out = {"n": len(rows), "parses": _rate([r["parses"] for r in rows]), "same": _rate([r["same"] for r in rows])}
    for a in ATTRIBUTES:
        vals = [r[a] for r in rows if r[a] is not None]
        out[a], out[f"n_{a}"] = _rate(vals), len(vals)
    return out


def _rate(vals: list[bool]) -> float | None:
    return sum(map(bool, vals)) / len(vals) if vals else None


def caption_agreement(writer, images, prompts: list[str]) -> dict:
    """Caption each image with `writer` (eval/captioner.py CaptionWriter) and compare with its
    prompt: exact match (case and spacing ignored), mean MiniLM cosine of caption and prompt,
    and for shapes prompts the scene agreement above. Returns the numbers and the first captions."""
    from .contrastive import encode_pooled

    written = writer.write(images)
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    exact = [norm(w) == norm(p) for w, p in zip(written, prompts)]
    a, b = encode_pooled(written), encode_pooled(list(prompts))
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-12)
    rows = [r for r in (scene_agreement(w, p) for w, p in zip(written, prompts)) if r is not None]
    out = {"n": len(written), "exact": sum(exact) / max(len(exact), 1), "similarity": float(cos.mean()),
           "examples": [{"prompt": p, "caption": w} for p, w in list(zip(prompts, written))[:8]]}
    if rows:
        out["shapes"] = summarise(rows)
    return out
