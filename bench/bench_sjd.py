"""Batch-1 latency of speculative Jacobi decoding vs plain cached decoding (not a test).

bench_families.py times each rung in its own block of 5 calls, so load that changes during the run
lands on some rungs and not others. Here every prompt is decoded by every rung back to back
(plain, then each window, then the masked mode's pass counts if --masked is given), over
--rounds rounds, so drifting load hits all rungs alike; the speed-up is reported on the median
and on the minimum per-image time, wall and process CPU. Quality is not measured here (the
families bench does, on 64 images); the tokens per pass are.

It also times one network pass of the causal model alone at 1 position (a plain decode step) and
at window + 1 positions (an SJD pass), CFG rows included: the speed-up SJD can reach is at most
tokens-per-pass x (step cost / pass cost), so these two numbers say how many tokens per pass a
target speed-up needs.

    python bench/bench_sjd.py --ar runs/ar-emoji/ar/model --windows 4 8 16 --out bench/results/sjd_latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from blinkgen.api import load
from blinkgen.eval.evaluate import build_reference, run_prompts
from blinkgen.outputs import parse_args_with_out, write_text
from blinkgen.speed.fused_llama import fused_view


def _time(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


@torch.inference_mode()
def pass_costs(gen, positions: list[int], reps: int = 50) -> dict[int, float]:
    """Median seconds of one cached forward + head of the causal model at T new positions
    (2 rows: CFG), mid-sequence, for each T in `positions`."""
    from blinkgen.models.llama import KVCache

    net = fused_view(gen.model.llama)
    c, dt = net.cfg, gen.model.dtype
    P, N = gen.model.cfg.prefix_len, gen.model.cfg.n_tokens
    key_mask = torch.ones(2, P + N, dtype=torch.bool)
    cache = KVCache.allocate(c, 2, P + N, dt, "cpu")
    g = torch.Generator().manual_seed(0)
    net.forward_cached(torch.randn(2, P, c.dim, generator=g).to(dt), torch.arange(P), cache, key_mask)
    out = {}
    for T in positions:
        x, pos = torch.randn(2, T, c.dim, generator=g).to(dt), torch.arange(P + N // 4, P + N // 4 + T)
        for _ in range(5):
            net.head(net.forward_cached(x, pos, cache, key_mask))
        ts = []
        for _ in range(reps):
            ts.append(_time(lambda: net.head(net.forward_cached(x, pos, cache, key_mask)))[0])
        out[T] = statistics.median(ts)
    return out


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
    args = parse_args_with_out(ap, argv)  # an existing --out: refused now, exit 2
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
                    st = replace(st, window=w)
                text = g.encode_prompts([p])  # memoised: text cost is not timed
                out = []
                wall, cpu = _time(lambda: out.append(g.decode_tokens(text, [s], st)))
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
                tpp[name] += out[0][2].get("tokens_per_pass", [])
        print(f"round {rnd + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    costs = pass_costs(gen, sorted({1, *(w + 1 for w in args.windows)}))
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
            w = int(name.rsplit(" ", 1)[1])
            row["pass_cost_vs_step"] = costs[w + 1] / costs[1]
            row["tokens_per_pass_needed_for_1.8x"] = 1.8 * row["pass_cost_vs_step"]
        rows.append(row)
    result = {"what": "batch-1 decode latency, rungs interleaved per prompt",
              "command": "python bench/bench_sjd.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "ar": args.ar, "masked": args.masked, "prompts": args.prompts, "rounds": args.rounds,
              "threads": args.threads, "load_average_at_start": [round(x, 2) for x in load_start],
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "rows": rows,
              "network_pass_median_s": {str(k): v for k, v in costs.items()},
              "wall_s": time.perf_counter() - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2), args.overwrite)
    print(render(result), end="")
    return result


def render(r: dict) -> str:
    lines = [f"`{r['ar']}`, {r['prompts']} prompts x {r['rounds']} rounds, {r['threads']} threads, load "
             f"{r['load_average_at_start'][0]} -> {r['load_average_at_end'][0]}.", "",
             "| rung | median ms (wall) | speed-up median wall | speed-up min wall | speed-up median CPU | tokens/pass | "
             "pass / step cost | tokens/pass for 1.8x |", "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        tp = f"{x['tokens_per_pass']:.2f}" if "tokens_per_pass" in x else ""
        pc = f"{x['pass_cost_vs_step']:.2f}" if "pass_cost_vs_step" in x else ""
        need = f"{x['tokens_per_pass_needed_for_1.8x']:.2f}" if "pass_cost_vs_step" in x else ""
        lines.append(f"| {x['rung']} | {x['median_wall_s'] * 1e3:.0f} | {x['speedup_median_wall']:.2f}x | "
                     f"{x['speedup_min_wall']:.2f}x | {x['speedup_median_cpu']:.2f}x | {tp} | {pc} | {need} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
