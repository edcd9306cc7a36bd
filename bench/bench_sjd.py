"""Batch-1 latency of speculative Jacobi decoding vs plain cached decoding (not a test).

bench_families.py times each rung in its own block of 5 calls, so load that changes during the run
lands on some rungs and not others. Here every prompt is decoded by every rung back to back
(plain, then each window, then the masked mode's pass counts if --masked is given), over
--rounds rounds, so drifting load hits all rungs alike; the speed-up is reported on the median
and on the minimum per-image time, wall and process CPU. Quality is not measured here (the
families bench does, on 64 images); the tokens per pass are.

    python bench/bench_sjd.py --ar runs/ar-emoji/ar/model --windows 4 8 16 --out bench/results/sjd_latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from blinkgen.api import load
from blinkgen.eval.evaluate import build_reference, run_prompts


def _time(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--ar", required=True, help="causal AR model folder")
    ap.add_argument("--masked", default=None, help="masked-mode model folder (optional rungs)")
    ap.add_argument("--masked-steps", type=int, nargs="*", default=[4, 8])
    ap.add_argument("--windows", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--data", default="datasets/emoji+shapes:1500")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--evaluator", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from blinkgen.eval.contrastive import load_evaluator

    gen = load(args.ar)
    mg = load(args.masked) if args.masked else None
    ref = build_reference(args.data, gen.image_size, evaluator=load_evaluator(args.evaluator))
    prompts, seeds = run_prompts(ref, args.prompts, 0)
    for g in filter(None, (gen, mg)):
        g.encode_prompts(sorted(set(prompts)))  # text cost is not timed
    rungs = [("cached", gen, gen.settings(sampler="cached"), None)]
    rungs += [(f"sjd window {w}", gen, gen.settings(sampler="sjd"), w) for w in args.windows]
    if mg is not None:
        rungs += [(f"maskgit {k}", mg, mg.settings(steps=k), None) for k in args.masked_steps]
    times = {name: {"wall": [], "cpu": []} for name, *_ in rungs}
    tpp = {name: [] for name, *_ in rungs}
    load_start = os.getloadavg()
    for g, st in ((r[1], r[2]) for r in rungs):  # warm-up: allocator, fused views, kernels
        g.sample_tokens(prompts[:1], seeds[:1], st)
    t0 = time.perf_counter()
    for rnd in range(args.rounds):
        for p, s in zip(prompts, seeds):
            for name, g, st, w in rungs:
                if w is not None:
                    g.window = w
                wall, cpu = _time(lambda: g.sample_tokens([p], [s], st))
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
                tpp[name] += g.last_stats.get("tokens_per_pass", [])
        print(f"round {rnd + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = times["cached"]
    rows = []
    for name, *_ in rungs:
        t = times[name]
        row = {"rung": name, "n": len(t["wall"]),
               "median_wall_s": statistics.median(t["wall"]), "min_wall_s": min(t["wall"]),
               "median_cpu_s": statistics.median(t["cpu"]), "min_cpu_s": min(t["cpu"])}
        for stat, f in (("median", statistics.median), ("min", min)):
            for clock in ("wall", "cpu"):
                row[f"speedup_{stat}_{clock}"] = f(base[clock]) / f(t[clock])  # plain time / this time
        if tpp[name]:
            row["tokens_per_pass"] = statistics.mean(tpp[name])
        rows.append(row)
    result = {"what": "batch-1 decode latency, rungs interleaved per prompt",
              "command": "python bench/bench_sjd.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "ar": args.ar, "masked": args.masked, "prompts": args.prompts, "rounds": args.rounds,
              "threads": args.threads, "load_average_at_start": [round(x, 2) for x in load_start],
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "rows": rows,
              "wall_s": time.perf_counter() - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(render(result), end="")
    return result


def render(r: dict) -> str:
    lines = [f"`{r['ar']}`, {r['prompts']} prompts x {r['rounds']} rounds, {r['threads']} threads, load "
             f"{r['load_average_at_start'][0]} -> {r['load_average_at_end'][0]}.", "",
             "| rung | median ms (wall) | speed-up median wall | speed-up min wall | speed-up median CPU | tokens/pass |",
             "|---|---|---|---|---|---|"]
    for x in r["rows"]:
        tp = f"{x['tokens_per_pass']:.2f}" if "tokens_per_pass" in x else ""
        lines.append(f"| {x['rung']} | {x['median_wall_s'] * 1e3:.0f} | {x['speedup_median_wall']:.2f}x | "
                     f"{x['speedup_min_wall']:.2f}x | {x['speedup_median_cpu']:.2f}x | {tp} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
