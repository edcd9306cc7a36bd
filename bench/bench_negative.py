"""The negative prompt's effect (issue 16), measured with the shapes checker (not a test).

For shapes prompts "a <colour> <shape>" (every colour x shape given), each seed is generated twice
with the same settings: without a negative prompt, and with negative prompt = the colour word.
The negative prompt replaces the null prompt of classifier-free guidance, so guidance pushes away
from "<colour>" instead of from "". Read back with blinkgen.eval.shapes_check.detect, per image:

  colour_gone   no detected object has the prompt's colour (nothing detected counts as gone)
  colour_right  the checker's colour verdict: the detected colours are exactly {prompt colour}
  shape_right   the checker's shape verdict: the detected shapes are exactly {prompt shape}
  nothing       no object detected at all

Reported per condition (all prompts, and per prompt) as fractions, plus which colours replaced
the prompt colour and how many (seed, prompt) pairs changed verdict. The model's weights hash
(modelio.weights_hash, what PNGs record as model_hash) is in the JSON: the numbers are for that
model only.

    nice -n 19 python bench/bench_negative.py --out bench/results/negative.json --grid bench/results/negative_grid.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import blinkgen
from blinkgen.eval.evaluate import versions
from blinkgen.eval.shapes_check import check
from blinkgen.pipeline import Request

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square")
CONDITIONS = ("none", "colour")  # negative prompt: none, or the prompt's colour word


def verdicts(image, colour: str, caption: str) -> dict:
    r = check(image, caption)
    seen = [d.colour for d in r.objects]
    return {"colour_gone": colour not in seen, "colour_right": bool(r.colour), "shape_right": bool(r.shape),
            "nothing": not r.objects, "colours_seen": sorted(set(seen))}


def summarise(rows: list[dict]) -> dict:
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("colour_gone", "colour_right", "shape_right", "nothing")}
    out["n"] = len(rows)
    out["colours_seen"] = dict(Counter(c for r in rows for c in r["colours_seen"]).most_common())
    return out


def generate(pipe, settings, prompts: list[str], seeds: list[int], batch: int) -> list[Image.Image]:
    reqs = [Request(p, s) for p in prompts for s in seeds]
    images = []
    for i in range(0, len(reqs), batch):
        images += pipe.sample(reqs[i:i + batch], settings).images
    return images


def save_grid(path: Path, prompts: list[str], images: dict, n_seeds: int, cell: int = 64) -> None:
    """Rows: each prompt without, then with its negative; columns: the first n_seeds seeds."""
    label_w = 150
    rows = [(p, c) for p in prompts for c in CONDITIONS]
    grid = Image.new("RGB", (label_w + n_seeds * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for r, (p, c) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 12), p, fill="black")
        draw.text((4, r * cell + cell // 2 + 2), "neg: " + (p.split()[1] if c == "colour" else "-"), fill="gray")
        for k in range(n_seeds):
            grid.paste(images[(p, c)][k].resize((cell, cell), Image.NEAREST), (label_w + k * cell, r * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--colours", nargs="+", default=list(COLOURS))
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--seeds", type=int, default=32, help="seeds 0..N-1 per prompt")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid", default=None, help="write a PNG grid (first 8 seeds) here")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    if Path(args.out).exists() and not args.overwrite:
        ap.error(f"{args.out} exists; pass --overwrite to replace it")
    torch.set_num_threads(args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    load0 = os.getloadavg()[0]
    pipe = blinkgen.load(args.model)
    prompts = [f"a {c} {s}" for c in args.colours for s in args.shapes]
    seeds = list(range(args.seeds))
    images, rows = {}, {}
    # prompt by prompt, both conditions together, the JSON rewritten after each: on a starved
    # shared machine a stopped run still leaves complete pairs ("complete": false, "prompts_done")
    for i, p in enumerate(prompts):
        colour = p.split()[1]
        for cond in CONDITIONS:
            settings = pipe.settings(negative_prompt=colour if cond == "colour" else None)
            images[(p, cond)] = generate(pipe, settings, [p], seeds, args.batch)
            rows[(p, cond)] = [verdicts(im, colour, p) for im in images[(p, cond)]]
        res = report(args, pipe, prompts[:i + 1], rows, images, complete=i + 1 == len(prompts))
        res.update({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                    "threads": args.threads, "load_average": [load0, os.getloadavg()[0]], "versions": versions(),
                    "argv": argv if argv is not None else sys.argv[1:]})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        if args.grid:
            save_grid(Path(args.grid), prompts[:i + 1], images, min(8, args.seeds))
        print(f"{p}: done ({i + 1}/{len(prompts)}, {res['cpu_seconds']:.0f} s CPU)", flush=True)
    print(json.dumps({k: res[k] for k in ("model_hash", "conditions", "paired", "mean_abs_pixel_change",
                                          "seconds", "cpu_seconds")}, indent=1))
    return res


def report(args, pipe, prompts: list[str], rows: dict, images: dict, complete: bool) -> dict:
    """The JSON for the prompts done so far."""
    res = {"benchmark": "negative_prompt", "model": args.model, "model_hash": getattr(pipe, "model_hash", None),
           "settings": pipe.settings().to_dict(), "prompts": [f"a {c} {s}" for c in args.colours for s in args.shapes],
           "prompts_done": prompts, "complete": complete, "seeds": args.seeds,
           "negative_prompt": "the prompt's colour word", "conditions": {}, "per_prompt": {}, "paired": {}}
    for cond in CONDITIONS:
        res["conditions"][cond] = summarise([r for p in prompts for r in rows[(p, cond)]])
        res["per_prompt"][cond] = {p: summarise(rows[(p, cond)]) for p in prompts}
    for k in ("colour_gone", "shape_right"):  # pairs (prompt, seed) whose verdict changed, each way
        pairs = [(a[k], b[k]) for p in prompts for a, b in zip(rows[(p, "none")], rows[(p, "colour")])]
        res["paired"][k] = {"false_to_true": sum(not a and b for a, b in pairs),
                            "true_to_false": sum(a and not b for a, b in pairs)}
    pix = [np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean()
           for p in prompts for a, b in zip(images[(p, "none")], images[(p, "colour")])]
    res["mean_abs_pixel_change"] = float(np.mean(pix))
    if args.grid:
        res["grid"] = args.grid
    return res

if __name__ == "__main__":
    main()
