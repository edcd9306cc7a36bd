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
  a model that ignores the word scores the two alike;
- the network's mean prediction (diffusion models that are not distilled students): its
  prediction of the image from pure noise, x0 = x1 - v(x1, t=1, prompt), is E[image | prompt]
  for a network that learnt the data (at t = 1 the noise carries nothing of the image), so it
  shows what the network knows of the layout with no sampler in the way. Per relation version,
  averaged over the seeds and decoded: how far (pixels, along the relation's axis) the second
  object's colour lies the right way from the first's, by the soft colour centroids
  (`mean_offset`), against the same measure on the mean of 64 true renders of the prompt. A
  network blind to the word scores about 0; the data scores about +25 px at 64 px. Its
  seed_spread is the standard deviation of that prediction across the seeds (latent units; the
  training latents have unit standard deviation), averaged over elements and prompts: a network
  that learnt t = 1 ignores the noise there and scores 0; one that takes a layout from the noise
  (never trained near t = 1) scores high, and its first sampling step follows the noise, not
  the prompt.

    python bench/bench_relation.py --model <folder> --out bench/results/<name>.json [--grid <png>] [--mean-grid <png>]
"""
import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blinkgen import load
from blinkgen.data.shapes import COLOURS, OPPOSITE, RELATIONS, describe, parse_caption, relation_offsets, render
from blinkgen.eval.shapes_check import detect, placement, score
from blinkgen.pngmeta import grid

PROMPTS = Path(__file__).parent / "prompts" / "shapes_eval.txt"
TRUTH_RENDERS = 64


def draw_relation_scene(rng: np.random.Generator):
    """A two-object relation scene of two different colours, every attribute drawn from rng
    (the scenes the binding benches train on)."""
    from blinkgen.data import shapes as S

    def obj(avoid=None):
        while True:
            o = S.Obj(str(rng.choice(list(S.COLOURS))), str(rng.choice(S.SHAPES)), str(rng.choice(S.SIZES)))
            if avoid is None or o.colour != avoid.colour:
                return o
    a = obj()
    return S.Scene((a, obj(a)), str(rng.choice(S.RELATIONS)), str(rng.choice(list(S.BACKGROUNDS))))


def mean_offset(img: np.ndarray, scene) -> float:
    """img (H, W, 3) float RGB (a mean image: colours mixed with the background); scene: two
    objects and a relation. Each pixel is unmixed by least squares into the two objects' colours
    over the background (the median border colour), the weights clipped to [0, 1]; -> the main-
    axis offset in pixels of the weights' centroids (shapes.relation_offsets): > 0 when the
    relation holds, < 0 when its opposite does."""
    img = img.astype(np.float64)
    h, w = img.shape[:2]
    bg = np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]), axis=0)
    m = np.stack([np.asarray(COLOURS[o.colour], np.float64) - bg for o in scene.objects[:2]], 1)  # (3, 2)
    wts = (np.linalg.pinv(m) @ (img - bg).reshape(-1, 3).T).T.clip(0, 1).reshape(h, w, 2)
    ys, xs = np.mgrid[0:h, 0:w]
    cen = [((wts[..., k] * xs).sum() / max(wts[..., k].sum(), 1e-6),
            (wts[..., k] * ys).sum() / max(wts[..., k].sum(), 1e-6)) for k in (0, 1)]
    return float(relation_offsets(scene.relation, cen[0], cen[1])[0])


@torch.no_grad()
def predict_at_noise(pipe, prompt: str, seeds: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The network's prediction x0 = x1 - v(x1, t=1, prompt) from seeds 0..seeds-1's noise,
    decoded, not rounded (the word's effect can be under one uint8 step) -> (mean over the seeds,
    seed 0's), each (H, W, 3) float RGB in [0, 255], and the seeds' spread (module doc)."""
    noise = pipe.initial_noise(list(range(seeds)))
    cond, _ = pipe.encode_prompts([prompt] * seeds)
    x0 = noise - pipe.net(noise, torch.ones(seeds), cond.states, cond.mask, cond.pooled)
    spread = float(x0.float().std(0, unbiased=False).mean())  # 0 when the noise is ignored
    rgb = pipe.ae.decode(x0.to(pipe.device)).float().add(1).mul(127.5).clamp(0, 255).permute(0, 2, 3, 1).cpu().numpy()
    return rgb.mean(0), rgb[0], spread


def true_mean(scene, size: int) -> np.ndarray:
    """The mean of TRUTH_RENDERS true renders of a scene: (size, size, 3) float."""
    return np.mean([render(scene, size, np.random.default_rng(i)) for i in range(TRUTH_RENDERS)], 0)


def applies(pipe) -> bool:
    """Whether the mean prediction means E[image | prompt]: a diffusion model that is not a
    distilled student (whose step-size input changes what one pass predicts)."""
    from blinkgen.models.denoisers import has_step_size_input

    return getattr(pipe, "family", None) == "diffusion" and not has_step_size_input(pipe.dit)


def mean_prediction(pipe, prompts: list[str], seeds: int) -> dict | None:
    """The network's E[image | prompt] (module doc) for each prompt whose two objects differ in
    colour: offsets (pixels) against those of the mean true render, and the seeds' spread. None
    for models this does not apply to (`applies`)."""
    if not applies(pipe):
        return None
    model, truth, spread = [], [], []
    for p in prompts:
        scene = parse_caption(p)
        if scene.objects[0].colour == scene.objects[1].colour:
            continue
        img, _, sp = predict_at_noise(pipe, p, seeds)
        model.append(mean_offset(img, scene))
        spread.append(sp)
        truth.append(mean_offset(true_mean(scene, img.shape[0]), scene))
    return {"n": len(model), "offset_px": float(np.mean(model)), "holds": float(np.mean(np.array(model) > 0)),
            "truth_offset_px": float(np.mean(truth)), "truth_holds": float(np.mean(np.array(truth) > 0)),
            "seed_spread": float(np.mean(spread))}


def mean_grid(pipe, prompts: list[str], seeds: int) -> Image.Image:
    """One row per prompt: the network's mean prediction at t = 1 over the seeds, the mean of
    the true renders, and seed 0's prediction alone (what the first sampling step heads for)."""
    cells = []
    for p in prompts:
        img, first, _ = predict_at_noise(pipe, p, seeds)
        cells += [img, true_mean(parse_caption(p), img.shape[0]), first]
    return grid([Image.fromarray(c.round().astype(np.uint8)) for c in cells], cols=3)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per version (default 4)")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", default=None, help="also write the first scene's versions x seeds here")
    ap.add_argument("--mean-grid", default=None, help="also write the first scene's versions' predictions at "
                    "t = 1 here (rows: versions; columns: mean over the seeds, mean of true renders, seed 0)")
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
           "placement_opposite_relation": float(np.mean(flipped)) if flipped else None,
           "mean_prediction": mean_prediction(pipe, sorted(set(prompts_all)), a.seeds)}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    if a.grid:
        grid(images_all[:4 * a.seeds], cols=a.seeds).save(a.grid)
    if a.mean_grid and applies(pipe):
        mean_grid(pipe, prompts_all[:4 * a.seeds:a.seeds], max(a.seeds, 16)).save(a.mean_grid)
    print(json.dumps({k: v for k, v in out.items() if k != "sensitivity_by_scene"}))
    return out


if __name__ == "__main__":
    main()
