"""Where a model's R@1 gap to real images is: R@1 on the held-out prompts split by source (emoji,
and for shapes by kind of scene: one object, a counted group, two groups, a relation), for the
generated images at several seeds and for the real held-out images of the same prompts.

    python bench/bench_r1_by_source.py --model default --out bench/results/default_r1_by_source.json

Each image's own prompt is ranked among the run's distinct prompts (as `blinkgen eval`'s R@1).
"""
import argparse
import json
from collections import defaultdict

import torch

from blinkgen import load
from blinkgen.data.shapes import parse_caption, scene_kind
from blinkgen.eval.contrastive import retrieval_hits
from blinkgen.eval.evaluate import build_reference, reference_seen, run_prompts
from blinkgen.pipeline import requests


def kind(prompt: str) -> str:
    try:
        s = parse_caption(prompt)
    except ValueError:
        return "emoji"
    # the labels of the committed results (bench/results/default_r1_by_source.json)
    return "shapes: " + {"counted": "count", "two-groups": "two groups"}.get(scene_kind(s), scene_kind(s))


def hits(emb: torch.Tensor, prompts: list[str], uniq: list[str], txt: torch.Tensor) -> list[bool]:
    return retrieval_hits(emb, txt, [uniq.index(p) for p in prompts], 1).tolist()


def table(rows: list[tuple[str, bool]]) -> dict:
    acc = defaultdict(list)
    for p, h in rows:
        acc[kind(p)].append(h)
        if kind(p) != "emoji":
            acc["shapes"].append(h)
    return {k: {"n": len(v), "R@1": sum(v) / len(v)} for k, v in sorted(acc.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="emoji+shapes:3000")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe = load(a.model)
    ref = build_reference(a.data, pipe.image_size)
    ev, settings = ref.evaluator, pipe.settings(None, None, None)
    gen_rows, uniq = [], None
    for seed in a.seeds:
        plist, seeds = run_prompts(ref, a.samples, seed)
        uniq = sorted(set(plist))
        txt = ev.embed_texts(uniq)
        images = []
        for i in range(0, len(plist), 32):
            images += pipe.sample(requests(plist[i:i + 32], seeds[i:i + 32]), settings).images
        gen_rows += zip(plist, hits(ev.embed_images(images), plist, uniq, txt))
    txt = ev.embed_texts(uniq)
    same = [i for i, c in enumerate(ref.own) if c in set(uniq)]
    real_prompts = [ref.own[i] for i in same]
    real_rows = list(zip(real_prompts, hits(ref.real_emb[same], real_prompts, uniq, txt)))
    out = {"model": a.model, "data": a.data, "seeds": a.seeds, "samples": a.samples, "settings": settings.to_dict(),
           "generated": table(gen_rows), "real_same_prompts": table(real_rows),
           "reference_seen_by_generator": reference_seen(pipe, ref)}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    for side in ("generated", "real_same_prompts"):
        print(side, json.dumps({k: (v["n"], round(v["R@1"], 3)) for k, v in out[side].items()}))


if __name__ == "__main__":
    main()
