"""Does a model listen to the relation word? For each relation prompt of the committed shapes set,
draw its four versions (left of / right of / above / below, same objects and background) at the
same seeds, and measure
- sensitivity: mean absolute pixel difference between the versions at one seed, divided by the
  difference between two seeds of one version (0: the word changes nothing; 1: as much as a new
  seed);
- the checker's relation and overall accuracy over all versions;
- placement: the relation judged by colour alone (`shapes_check.placement`), over the
  scenes whose two objects differ in colour -- where the model puts things, apart from whether it
  draws the right shapes and sizes (the checker's relation needs both); and, as its control, the
  same images judged against the opposite relation (left of <-> right of, above <-> below):
  a model that ignores the word scores the two alike.

    python bench/bench_relation.py --model <folder> --out bench/results/<name>.json [--grid <png>]
"""
import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from blinkgen import load
from blinkgen.data.shapes import OPPOSITE, RELATIONS, describe, parse_caption
from blinkgen.eval.shapes_check import detect, placement, score
from blinkgen.pngmeta import grid

PROMPTS = Path(__file__).parent / "prompts" / "shapes_eval.txt"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per version (default 4)")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", default=None, help="also write the first scene's versions x seeds here")
    ap.add_argument("--scenes", type=int, default=None, help="only the first N relation prompts (default: all 37)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pipe = load(a.model)
    lines = [ln for ln in PROMPTS.read_text().splitlines() if ln.strip()]
    scenes = [s for s in map(parse_caption, lines) if s.relation][:a.scenes]
    kw = {k: v for k, v in (("guidance", a.guidance), ("steps", a.steps)) if v is not None}
    sens, prompts_all, images_all = [], [], []
    for sc in scenes:
        versions = [describe(replace(sc, relation=r)) for r in RELATIONS]
        px = {}  # (version, seed) -> float array
        for v in versions:
            ims = pipe.generate([v] * a.seeds, seed=0, **kw)
            prompts_all += [v] * a.seeds
            images_all += ims
            for s, im in enumerate(ims):
                px[v, s] = np.asarray(im, dtype=np.float64)
        within = np.mean([np.abs(px[u, s] - px[v, s]).mean() for s in range(a.seeds)
                          for u, v in itertools.combinations(versions, 2)])
        across = np.mean([np.abs(px[v, s] - px[v, t]).mean() for v in versions
                          for s, t in itertools.combinations(range(a.seeds), 2)])
        sens.append(within / across)
    sc = score(images_all, prompts_all)
    placed, flipped = [], []  # each image against its relation and against the opposite one
    for im, prompt in zip(images_all, prompts_all):
        found, scene = detect(im)[0], parse_caption(prompt)
        if (p := placement(found, scene)) is not None:
            placed.append(p)
            flipped.append(placement(found, replace(scene, relation=OPPOSITE[scene.relation])))
    out = {"model": a.model, "settings": pipe.settings(a.steps, a.guidance, None).to_dict(), "scenes": len(scenes),
           "seeds": a.seeds, "sensitivity_mean": float(np.mean(sens)), "sensitivity_by_scene": [float(x) for x in sens],
           "relation": sc["relation"], "overall": sc["overall"], "n": sc["n_relation"],
           "colour": sc["colour"], "shape": sc["shape"], "size": sc["size"],
           "placement": float(np.mean(placed)) if placed else None, "n_placement": len(placed),
           "placement_opposite_relation": float(np.mean(flipped)) if flipped else None}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    if a.grid:
        grid(images_all[:4 * a.seeds], cols=a.seeds).save(a.grid)
    print(json.dumps({k: v for k, v in out.items() if k != "sensitivity_by_scene"}))
    return out


if __name__ == "__main__":
    main()
