"""First speed benchmark of a diffusion model (issue: the spine): images/s at batch 1 and 64,
p50/p95 latency per image, for the given step counts, CPU, fixed threads. Not a test.

    python bench/bench_speed.py --model default --threads 2 --out bench/results/default_speed.json

Timing covers the whole `sample` call (sampling and decoding; the prompts' text encodings are
computed once before timing and memoised, as a server does). One warm-up call per setting.
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import blinkgen
from blinkgen.outputs import parse_args_with_out, write_text
from blinkgen.pipeline import Request, requests
from blinkgen.textio import read_lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", default="4,8,20,50")
    ap.add_argument("--sampler", default="dpmpp2m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="batch-1 calls per setting")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", required=True)
    a = parse_args_with_out(ap)  # an existing --out: refused now, exit 2
    torch.set_num_threads(a.threads)
    gen = blinkgen.load(a.model)
    prompts = read_lines("bench/prompts/default_grid.txt", "prompts file")
    gen.sample(requests(prompts, list(range(len(prompts)))), gen.settings(steps=1))  # encode every prompt once
    rows = []
    for steps in map(int, a.steps.split(",")):
        s = gen.settings(steps=steps, sampler=a.sampler)
        gen.sample(requests(prompts[:1], [0]), s)  # warm-up
        lat = []
        for i in range(a.repeats):
            t = time.perf_counter()
            gen.sample([Request(prompts[i % len(prompts)], i)], s)
            lat.append(time.perf_counter() - t)
        bp = (prompts * 2)[: a.batch]
        t = time.perf_counter()
        gen.sample(requests(bp, list(range(a.batch))), s)
        tb = time.perf_counter() - t
        q = statistics.quantiles(lat, n=20)
        row = {"sampler": a.sampler, "steps": steps, "guidance": s.guidance, "nfe_per_image": steps * (2 if s.guidance != 1 else 1),
               "batch1_images_per_s": 1 / statistics.median(lat), "batch1_p50_s": statistics.median(lat),
               "batch1_p95_s": q[18], f"batch{a.batch}_images_per_s": a.batch / tb,
               f"batch{a.batch}_latency_per_image_s": tb / a.batch}
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    out = {"model": a.model, "threads": a.threads, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0], "rows": rows,
           "command": f"python bench/bench_speed.py --model {a.model} --threads {a.threads} --out {a.out}"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(a.out), json.dumps(out, indent=1), a.overwrite)


if __name__ == "__main__":
    main()
