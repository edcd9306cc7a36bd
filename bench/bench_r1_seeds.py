"""R@1 of a model on the held-out split at several generation seeds: how much of the gap to real
images (bench_default.py's real_R@1_same_prompts) is seed noise.

    python bench/bench_r1_seeds.py --out bench/results/default_r1_by_seed.json
"""
import argparse
import json

import torch

from blinkgen import load
from blinkgen.eval.evaluate import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="emoji+shapes:3000")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000])
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's")
    ap.add_argument("--sampler", default=None, help="default: the model's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe = load(a.model)
    out = {"model": a.model, "data": a.data, "samples": 128, "steps": a.steps, "guidance": a.guidance,
           "sampler": a.sampler, "by_seed": {}}
    for s in a.seeds:
        m = evaluate(pipe, a.data, samples=128, seed=s, progress=False,
                     steps=a.steps, guidance=a.guidance, sampler=a.sampler)
        out["settings"] = m.get("settings")
        out["reference_seen_by_generator"] = m["reference_seen_by_generator"]
        out["by_seed"][s] = {k: m["metrics"].get(k) for k in ("retrieval_R@1", "retrieval_R@5", "fd", "alignment")}
        out["real_all_heldout"] = m.get("ceiling")
        # the gate's bar (real images of the same prompts) and the same images through the model's decoder
        out["real_same_prompts"] = m["metrics"].get("real_same_prompts")
        out["real_same_prompts_through_decoder"] = m["metrics"].get("real_same_prompts_through_decoder")
        print(s, json.dumps(out["by_seed"][s]), flush=True)
    r1 = [v["retrieval_R@1"] for v in out["by_seed"].values()]
    out["mean_R@1"] = sum(r1) / len(r1)
    for k in ("real_same_prompts", "real_same_prompts_through_decoder"):
        print(k, (out.get(k) or {}).get("retrieval_R@1"), flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
