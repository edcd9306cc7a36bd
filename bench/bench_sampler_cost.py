"""Batch-1 wall time of one model under several samplers, interleaved (A B A B ...) in one process
so load changes hit every sampler alike: what a sampler costs beyond its network passes.

    python bench/bench_sampler_cost.py --model default --samplers euler euler_a --n 40 --out <json>
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from blinkgen import load
from blinkgen.pipeline import Request


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--samplers", nargs="+", default=["euler", "euler_a"])
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--n", type=int, default=40, help="timed images per sampler")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pipe = load(a.model)
    settings = {s: pipe.settings(steps=a.steps, sampler=s) for s in a.samplers}
    prompt = "a red heart"
    for s in a.samplers:  # warm-up: the prompt's encoding is memoised, kernels are warm
        pipe.sample([Request(prompt, 0)], settings[s])
    times = {s: [] for s in a.samplers}
    for i in range(a.n):
        for s in a.samplers:
            t = time.perf_counter()
            pipe.sample([Request(prompt, 1 + i)], settings[s])
            times[s].append(time.perf_counter() - t)
    out = {"model": a.model, "threads": a.threads, "n": a.n, "steps": settings[a.samplers[0]].steps,
           "load_avg_1m": os.getloadavg()[0],
           "ms": {s: {"p50": 1000 * statistics.median(v), "min": 1000 * min(v), "max": 1000 * max(v)}
                  for s, v in times.items()}}
    base = statistics.median(times[a.samplers[0]])
    out["ratio_to_first"] = {s: statistics.median(v) / base for s, v in times.items()}
    print(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
