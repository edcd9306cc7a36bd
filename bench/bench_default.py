"""The default model's gates (issue: a default model people recognise), measured on one model folder
at its default settings (or the given ones):

    python bench/bench_default.py --model default --data emoji+shapes:3000 --out bench/results/default_gates.json

1. nearest-neighbour check on the 52 emoji-name grid prompts (own emoji among the 5 nearest of all
   7,572 emoji images, 32x32 RGB; eval/recognise.py), seed i for prompt i;
2. `evaluate` on the held-out captions of --data (the model's own training spec and split seed 0):
   FD, alignment and R@1 against the real held-out images' R@1 on the same prompts;
3. compositional accuracy on the 128 committed shapes prompts (per attribute);
4. batch-1 latency (prompt -> image, new prompts, 2 threads), median and p95;
5. the 64-prompt grid (bench/prompts/default_grid.txt, seed 0) as a PNG, plus the 64 images one by
   one in a shuffled order with a key, for a blind naming by a reviewer.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
GRID = REPO / "bench" / "prompts" / "default_grid.txt"
SHAPES = REPO / "bench" / "prompts" / "shapes_eval.txt"
EMOJI = Path.home() / ".cache" / "blinkgen" / "datasets" / "emoji"


def prompts() -> list[str]:
    return [l.strip() for l in GRID.read_text().splitlines() if l.strip()]


def main(argv=None):
    import blinkgen
    from blinkgen.data.folder import load_folder
    from blinkgen.eval.evaluate import evaluate
    from blinkgen.eval.recognise import nearest_neighbour_hits
    from blinkgen.pngmeta import grid

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="emoji+shapes:3000", help="the model's training spec (its held-out split is the reference)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--style", default=None)
    ap.add_argument("--guidance-interval", default=None)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--nn-seed-offsets", type=int, nargs="*", default=[],
                    help="also run the nearest-neighbour check with seeds OFFSET+i (e.g. 1000 2000): its noise")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: nn,eval,shapes,latency,grid")
    ap.add_argument("--out", required=True)
    ap.add_argument("--grid-out", default=None, help="also write the 64-prompt grid PNG here")
    ap.add_argument("--blind-dir", default=None, help="write the 64 images shuffled, for a blind naming")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    skip = set(a.skip.split(","))
    pipe = blinkgen.load(a.model)
    extra = {k: v for k, v in (("style", a.style), ("guidance_interval", a.guidance_interval)) if v is not None}
    settings = pipe.settings(a.steps, a.guidance, a.sampler, **extra)
    kw = dict(steps=settings.steps, guidance=settings.guidance, sampler=settings.sampler, **extra)
    out = {"model": a.model, "settings": settings.to_dict(), "threads": a.threads,
           "command": "python bench/bench_default.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    names = prompts()[:52]
    if "nn" not in skip:
        ref = load_folder(EMOJI, pipe.image_size)
        ims = pipe.generate(names, seed=0, **kw)
        r = nearest_neighbour_hits(ims, names, ref)
        out["nn"] = {"hits": r["hits"], "n": r["n"], "misses": [(x["prompt"], x["rank"], x["neighbours"][:3])
                                                                 for x in r["per_prompt"] if not x["hit"]]}
        print("nn", r["hits"], "/", r["n"], flush=True)
        if a.nn_seed_offsets:  # the gate's noise: the same check on other seed sets (seed offset + i)
            extra_hits = {off: nearest_neighbour_hits(pipe.generate(names, seed=off, **kw), names, ref)["hits"]
                          for off in a.nn_seed_offsets}
            out["nn"]["hits_by_seed_offset"] = {0: r["hits"], **extra_hits}
            print("nn by seed offset", out["nn"]["hits_by_seed_offset"], flush=True)
    if "eval" not in skip:
        m = evaluate(pipe, a.data, samples=a.samples, **{k: v for k, v in kw.items() if k != "guidance_interval"})  # style rides in kw
        mm, real = m["metrics"], m["metrics"].get("real_same_prompts") or {}
        out["eval"] = {"fd": mm["fd"], "kid": mm.get("kid"), "alignment": mm["alignment"],
                       "R@1": mm["retrieval_R@1"], "R@5": mm["retrieval_R@5"],
                       "real_R@1_same_prompts": real.get("retrieval_R@1"), "real_alignment": m["ceiling"]["real_alignment"],
                       # the same real images through the model's autoencoder: what drawing them exactly scores
                       "real_R@1_same_prompts_through_decoder": (mm.get("real_same_prompts_through_decoder") or {}).get("retrieval_R@1"),
                       "real_fd_between_halves": m["ceiling"].get("real_fd_between_halves"),
                       # held-out reference images the model's lineage trained on (eval/leakage.py): 0 or the
                       # FD / R@1 / alignment above are flattered
                       "reference_seen_by_generator": m["reference_seen_by_generator"]["seen"]}
        print("eval", json.dumps(out["eval"]), flush=True)
    if "shapes" not in skip:
        m = evaluate(pipe, "shapes:1500", samples=128, prompts=str(SHAPES),
                     **{k: v for k, v in kw.items() if k != "guidance_interval"})  # style rides in kw
        s = m["metrics"]["shapes"]
        out["shapes"] = {k: s[k] for k in ("colour", "shape", "count", "size", "relation", "background", "overall")}
        print("shapes", json.dumps(out["shapes"]), flush=True)
    if "latency" not in skip:
        fresh = [f"{p} {i}" for i, p in enumerate(names[:12])]  # new prompts: no memo hit
        pipe.generate(["warm-up"], seed=0, **kw)
        lat = []
        for i, p in enumerate(fresh):
            t = time.perf_counter()
            pipe.generate(p, seed=i, **kw)
            lat.append(time.perf_counter() - t)
        out["latency_b1"] = {"p50_s": statistics.median(lat), "p95_s": sorted(lat)[int(0.95 * (len(lat) - 1))],
                             "load_avg_1m": os.getloadavg()[0]}
        print("latency", json.dumps(out["latency_b1"]), flush=True)
    if "grid" not in skip and (a.grid_out or a.blind_dir):
        allp = prompts()
        ims = pipe.generate(allp, seed=0, **kw)
        if a.grid_out:
            grid(ims, cols=8).save(a.grid_out)
        if a.blind_dir:
            d = Path(a.blind_dir)
            d.mkdir(parents=True, exist_ok=True)
            order = list(range(len(allp)))
            random.Random(2026).shuffle(order)
            for k, i in enumerate(order):
                ims[i].resize((192, 192), 0).save(d / f"image-{k:02d}.png")
            (d / "prompts.txt").write_text("".join(p + "\n" for p in sorted(allp)))
            (d.parent / f"{d.name}-key.json").write_text(json.dumps({f"image-{k:02d}.png": allp[i] for k, i in enumerate(order)}, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
