"""Shapes compositional accuracy of a model on the 128 committed prompts at several seed sets:
one seed set has a standard error of about 0.04, three about 0.023. Seed set S draws prompt i with
seed S + (i // 32) * 32 in batches of 32, so set 0 equals bench_default.py's shapes score.

    python bench/bench_shapes_seeds.py --model <folder> --guidance 3 --out <json>
    python bench/bench_shapes_seeds.py --model <folder> --guidance 6 --steps 24 --sampler euler \
        --guidance-interval 0.2,1 --seeds 0 --out <json>      # a sampling-settings sweep point
"""
import argparse
import json
import time
from pathlib import Path

import torch

from blinkgen import load
from blinkgen.data.shapes import SCENE_KINDS, parse_caption, scene_kind
from blinkgen.eval.shapes_check import check, score

KEYS = ("colour", "shape", "count", "size", "relation", "overall")
PROMPTS = Path(__file__).parent / "prompts" / "shapes_eval.txt"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000])
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--sampler", default=None, help="default: the model's")
    ap.add_argument("--guidance-interval", default=None, help="lo,hi in [0, 1]: guidance only there")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pipe = load(a.model)
    lines = [s.strip() for s in PROMPTS.read_text().splitlines() if s.strip()]
    kw = {k: v for k, v in dict(guidance=a.guidance, steps=a.steps, sampler=a.sampler,
                                 guidance_interval=a.guidance_interval).items() if v is not None}
    kind_of = [scene_kind(parse_caption(x)) for x in lines]
    out = {"model": a.model, "prompts": len(lines), "settings": kw, "guidance": a.guidance, "by_seed_set": {},
           "prompts_by_kind": {k: kind_of.count(k) for k in SCENE_KINDS}}
    for s in a.seeds:
        t = time.time()
        imgs = []
        for i in range(0, len(lines), 32):
            imgs += pipe.generate(lines[i:i + 32], seed=s + i, **kw)
        r = score(imgs, lines)
        out["by_seed_set"][str(s)] = {k: r[k] for k in KEYS}
        hits = {k: [] for k in SCENE_KINDS}  # overall accuracy per scene kind: where the images fail
        for img, line, kind in zip(imgs, lines, kind_of):
            hits[kind].append(check(img, line).overall)
        out["by_seed_set"][str(s)]["overall_by_kind"] = {k: sum(v) / len(v) for k, v in hits.items() if v}
        print(s, {k: round(r[k], 3) for k in KEYS}, f"{time.time() - t:.0f} s", flush=True)
    out["mean"] = {k: sum(v[k] for v in out["by_seed_set"].values()) / len(a.seeds) for k in KEYS}
    kinds = out["by_seed_set"][str(a.seeds[0])]["overall_by_kind"]
    out["mean"]["overall_by_kind"] = {k: sum(v["overall_by_kind"][k] for v in out["by_seed_set"].values()) / len(a.seeds)
                                      for k in kinds}
    print("mean", {k: round(out["mean"][k], 3) for k in KEYS}, "by kind",
          {k: round(v, 3) for k, v in out["mean"]["overall_by_kind"].items()})
    Path(a.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
