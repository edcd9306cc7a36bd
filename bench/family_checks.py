"""Checks of one family's default row that the families bench (bench_families.py) adds beside
speed and FD (not a test):

- recognisability: the nearest-neighbour check (blinkgen.eval.recognise): one image per emoji
  name of a committed prompt list (seeds 0..), a hit when one of that emoji's own images is among
  the 5 nearest of the whole emoji folder in 32x32 pixel space;
- mode collapse: 8 seeds of one prompt, the mean pairwise distance of their embeddings in the
  contrastive evaluator's image space (unit rows, so distances lie in [0, 2]), next to the same
  number for the real images of that emoji's variants (its group in the emoji folder: skin tones
  and both drawing styles). A generator that collapsed gives ~0; the real spread is the yardstick.
"""
from __future__ import annotations

import itertools

import torch

from blinkgen.data.folder import normalize_caption
from blinkgen.eval.recognise import nearest_neighbour_hits, own_images
from blinkgen.pipeline import requests

DIVERSITY_PROMPTS = ["thumbs up", "waving hand", "grinning face", "red heart"]
DIVERSITY_SEEDS = 8


def _generate(gen, settings, prompts: list[str], seeds: list[int], batch: int) -> list:
    out = []
    for i in range(0, len(prompts), batch):
        out += gen.sample(requests(prompts[i:i + batch], seeds[i:i + batch]), settings).images
    return out


def nn_check(gen, settings, prompts: list[str], emoji, batch: int) -> dict:
    """Recognisability over the prompts that name an image of `emoji` (an ImageCaptionSet at the
    model's image size), one image each, seeds 0.. ."""
    named = [p for p in dict.fromkeys(prompts) if own_images(p, emoji)]
    images = _generate(gen, settings, named, list(range(len(named))), batch)
    r = nearest_neighbour_hits(images, named, emoji)
    return {k: r[k] for k in ("hits", "n", "rate", "k", "side")} | {
        "hit_prompts": [x["prompt"] for x in r["per_prompt"] if x["hit"]]}


def mean_pairwise(emb: torch.Tensor) -> float:
    """Mean L2 distance over all unordered pairs of rows (N >= 2)."""
    d = [float((emb[i] - emb[j]).norm()) for i, j in itertools.combinations(range(len(emb)), 2)]
    return sum(d) / len(d)


def variants(prompt: str, emoji) -> list[int]:
    """Indices of the images in the group of the image whose caption is `prompt` (its skin tones
    and drawing styles); [] if no image has that caption."""
    own = own_images(prompt, emoji)
    if not own or emoji.groups is None:
        return own
    groups = {emoji.groups[i] for i in own}
    return [i for i, g in enumerate(emoji.groups) if g in groups]


def diversity(gen, settings, emoji, evaluator, prompts=DIVERSITY_PROMPTS, seeds: int = DIVERSITY_SEEDS) -> dict:
    """Per prompt: the generated spread (seeds 0..seeds-1), the real spread of its variants, their
    ratio; and the mean ratio over the prompts."""
    rows = []
    for p in prompts:
        idx = variants(normalize_caption(p), emoji)
        if len(idx) < 2:
            continue
        fake = evaluator.embed_images(_generate(gen, settings, [p] * seeds, list(range(seeds)), seeds))
        real = evaluator.embed_images(emoji.images[idx])
        g, r = mean_pairwise(fake), mean_pairwise(real)
        rows.append({"prompt": p, "generated": g, "real_variants": r, "n_real": len(idx), "ratio": g / r})
    return {"seeds": seeds, "per_prompt": rows,
            "mean_ratio": sum(x["ratio"] for x in rows) / len(rows) if rows else None}


def render_checks(rows: list[dict]) -> list[str]:
    """Markdown lines for the rows that carry these checks."""
    lines = []
    nn_rows = [x for x in rows if "nn" in x]
    if nn_rows:
        x0 = nn_rows[0]["nn"]
        lines += ["", f"Nearest-neighbour recognisability ({x0['n']} emoji names, one image each, hit = own image "
                  f"among the {x0['k']} nearest of the emoji folder at {x0['side']}x{x0['side']} px):", "",
                  "| family | rung | hits | rate | hit prompts |", "|---|---|---|---|---|"]
        for x in nn_rows:
            n = x["nn"]
            lines.append(f"| {x['family']} | {x['rung']} | {n['hits']} / {n['n']} | {n['rate']:.3f} | "
                         f"{', '.join(n['hit_prompts'][:8])}{' ...' if len(n['hit_prompts']) > 8 else ''} |")
    div_rows = [x for x in rows if x.get("diversity")]
    if div_rows:
        prompts = [p["prompt"] for p in div_rows[0]["diversity"]["per_prompt"]]
        lines += ["", f"Mode collapse: mean pairwise distance of {div_rows[0]['diversity']['seeds']} seeds of one "
                  "prompt in the evaluator's image space, / the same for the real images of that emoji's variants "
                  "(ratio 0 = collapsed):", "",
                  "| family | rung | " + " | ".join(prompts) + " | mean ratio |", "|---|---|" + "---|" * (len(prompts) + 1)]
        for x in div_rows:
            d = x["diversity"]
            cells = [f"{p['generated']:.3f} / {p['real_variants']:.3f} ({p['ratio']:.2f})" for p in d["per_prompt"]]
            lines.append(f"| {x['family']} | {x['rung']} | " + " | ".join(cells) + f" | {d['mean_ratio']:.2f} |")
    return lines
