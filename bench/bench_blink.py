"""Blink benchmark (issue 14), not a test: the top rungs of the diffusion speed ladder, in one run.

Per rung (a model, its settings and an engine), in one process, on the same evaluator prompts:
  quality   --samples images (prompts from the held-out captions of --data, seeds 0..): FD, KID,
            alignment, R@1 (blinkgen.eval.evaluate) and the nearest-neighbour recognisability
            against --nn-data (eval/recognise.py); the same images time batch --batch (images/s,
            MFU against the fp32 or bf16 matmul peak measured in this run);
  latency   end to end, prompt text -> PNG bytes, batch 1: every call gets a NEW prompt (the
            prompt memo is emptied first; the null prompt stays, as a server keeps it), with the
            time per stage: text encoding, network passes, decode, PNG. Rungs are interleaved
            round by round (each round runs every rung once, in a rotated order), so load changes
            on a shared machine hit every rung alike; medians with the range, and the load
            average before and after every round.
Rungs: the teacher at its default (the quality reference) and at few steps; step caching on its
multi-step path; the distilled models (shortcut, consistency) at 1, 2, 4, 8 steps; engines (bf16,
int8, torch.compile, decoder precision) on the distilled default; and the peer the issue names,
the loop a diffusers user writes for the same network: FlowMatchEulerDiscreteScheduler at 28
steps with classifier-free guidance as two passes.

    python bench/bench_blink.py --teacher default --shortcut RUN/model --consistency RUN2/model \
        --data ~/.cache/blinkgen/datasets/emoji+shapes:1500 --nn-data ~/.cache/blinkgen/datasets/emoji \
        --out bench/results/blink.json
    python bench/bench_blink.py --render bench/results/blink.json      # the RESULTS.md tables
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_diffusion import PeakRSS, _peers, matmul_peak_gflops  # noqa: E402

import blinkgen  # noqa: E402
from blinkgen.eval.evaluate import blas_threads, build_reference, run_prompts, score_images, versions  # noqa: E402
from blinkgen.eval.recognise import nearest_neighbour_hits, own_images  # noqa: E402
from blinkgen.pipeline import Request, requests  # noqa: E402
from blinkgen.pngmeta import png_bytes  # noqa: E402
from blinkgen.speed.engine import apply_engine  # noqa: E402

STUDENT_STEPS = (1, 2, 4, 8)  # the distilled models' rungs
PEER_STEPS = 28  # FlowMatchEulerDiscreteScheduler pipelines' usual step count (SD3, Flux)


class Rung:
    """One rung: a pipeline with its settings (or the diffusers peer loop on it) and an engine.
    passes: network passes per image (a CFG pass over 2 rows counts as 2); plain: the same model
    without an engine, for FLOP counting (default: pipe); latency: per call, seconds per stage."""

    def __init__(self, name, pipe, settings=None, peer=None, steps=0, guidance=1.0, engine="fp32", passes=0,
                 plain=None):
        self.name, self.pipe, self.settings, self.peer = name, pipe, settings, peer
        self.steps, self.guidance, self.engine, self.passes, self.plain = steps, guidance, engine, passes, plain
        self.latency: list[dict] = []

    def images(self, prompts, seeds, peers):
        if self.peer:
            return peers.peer_images(self.pipe, self.peer, prompts, seeds, self.steps, self.guidance)
        return self.pipe.sample(requests(prompts, seeds), self.settings).images

    @torch.inference_mode()
    def one(self, prompt: str, seed: int, peers) -> dict:
        """prompt -> PNG bytes for a NEW prompt; seconds per stage."""
        forget_prompts(self.pipe)
        t0 = time.perf_counter()
        if self.peer:
            cond, uncond = self.pipe.encode_prompts([prompt])
            t1 = time.perf_counter()
            z = peers.peer_latents(self.pipe, self.peer, [prompt], [seed], self.steps, self.guidance)
            t2 = time.perf_counter()
            from blinkgen.models.autoencoder import to_uint8
            from PIL import Image
            px = to_uint8(self.pipe.ae.decode(z)).cpu()
            im = Image.fromarray(px[0].permute(1, 2, 0).numpy())
            t3 = time.perf_counter()
            params = {"prompt": prompt, "seed": seed, "steps": self.steps, "guidance": self.guidance, "sampler": self.peer}
            stages = {"text": t1 - t0, "net": t2 - t1, "decode": t3 - t2}
        else:
            res = self.pipe.sample([Request(prompt, seed)], self.settings)
            im, params = res.images[0], self.pipe.png_parameters(prompt, seed, self.settings)
            stages = {"text": res.timings["text"], "net": res.timings["sample"], "decode": res.timings["decode"]}
        t4 = time.perf_counter()
        data = png_bytes(im, params)
        t5 = time.perf_counter()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        return {**stages, "png": t5 - t4, "total": t5 - t0}


def forget_prompts(pipe) -> None:
    """Empty the prompt memo except the null prompt (what a long-running server holds)."""
    null = pipe.config.get("null_prompt", "")
    pipe.memo.rows = {k: v for k, v in pipe.memo.rows.items() if k == null}


def flops_per_pass(pipe) -> float:
    """Matmul FLOPs of one denoiser pass for one image (2 per multiply-add), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    cond, _ = pipe.encode_prompts(["a red circle"])
    x = pipe.initial_noise([0])
    d = torch.full((1,), 0.5) if getattr(pipe.dit.cfg, "step_size_cond", False) else None
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        pipe.net(x, torch.ones(1), cond.states, cond.mask, cond.pooled, d=d)
    return float(fc.get_total_flops())


def bf16_peak_gflops(n: int, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build_rungs(args) -> list[Rung]:
    """The ladder's top rungs (module doc); --rungs picks a subset by name prefix."""
    load = lambda m: blinkgen.load(m)  # noqa: E731  a fresh pipeline per engine (engines swap networks)
    teacher = load(args.teacher)
    w, k_def = teacher.defaults.guidance, teacher.defaults.steps
    rungs = [Rung(f"teacher {teacher.defaults.sampler}@{k_def} (reference)", teacher, teacher.settings(), steps=k_def,
                  guidance=w, passes=2 * k_def)]
    for k in (1, 2, 4):
        rungs.append(Rung(f"teacher euler@{k}", teacher, teacher.settings(k, sampler="euler"), steps=k, guidance=w, passes=2 * k))
    rungs.append(Rung("teacher dpmpp2m@4", teacher, teacher.settings(4, sampler="dpmpp2m"), steps=4, guidance=w, passes=8))
    for c in args.cache:
        rungs.append(Rung(f"teacher {teacher.defaults.sampler}@{k_def} cache {c}", teacher, teacher.settings(cache=c),
                          steps=k_def, guidance=w, passes=2 * k_def))
    rungs.append(Rung(f"diffusers FlowMatchEuler@{PEER_STEPS} CFG 2 passes", teacher, peer="diffusers_euler_2pass",
                      steps=PEER_STEPS, guidance=w, passes=2 * PEER_STEPS))
    for label, folder in (("shortcut", args.shortcut), ("consistency", args.consistency)):
        if not folder:
            continue
        pipe = load(folder)
        for k in STUDENT_STEPS:
            rungs.append(Rung(f"{label} euler@{k}", pipe, pipe.settings(k), steps=k, passes=k))
    if args.shortcut:
        k = blinkgen.load(args.shortcut).defaults.steps
        for engine in args.engines:
            pipe = apply_engine(load(args.shortcut), engine)
            rungs.append(Rung(f"shortcut euler@{k} {engine}", pipe, pipe.settings(k), steps=k, passes=k, engine=engine,
                              plain=next(r.pipe for r in rungs if r.name.startswith("shortcut"))))
    if args.rungs:
        rungs = [r for r in rungs if any(r.name.startswith(p) for p in args.rungs)]
    return rungs


def nn_check(images, prompts, nn_ref) -> dict:
    """The nearest-neighbour recognisability of eval/recognise.py over the prompts that name an
    image of the reference set, one image per distinct prompt (as `blinkgen eval --nn-data`)."""
    first = {}
    for i, p in enumerate(prompts):
        first.setdefault(p, i)
    keep = [i for p, i in first.items() if own_images(p, nn_ref)]
    r = nearest_neighbour_hits([images[i] for i in keep], [prompts[i] for i in keep], nn_ref)
    return {k: r[k] for k in ("hits", "n", "rate", "k", "side")}


def quality_and_throughput(rung: Rung, prompts, seeds, ref, args, peers, peaks, flops, nn_ref) -> dict:
    with PeakRSS() as mem:
        images, times = [], []
        for i in range(0, len(prompts), args.batch):
            t = time.perf_counter()
            images += rung.images(prompts[i:i + args.batch], seeds[i:i + args.batch], peers)
            times.append(time.perf_counter() - t)
    q = score_images(images, prompts, ref)
    if nn_ref is not None:
        q["nn"] = nn_check(images, prompts, nn_ref)
    ips = len(images) / sum(times)
    peak = peaks["bf16"] if "bf16" in rung.engine.split("+") else peaks["fp32"]
    return {"quality": q, f"batch{args.batch}_images_per_s": ips, "mfu": ips * rung.passes * flops / (peak * 1e9),
            "mfu_peak": "bf16" if peak is peaks["bf16"] else "fp32", "peak_rss_mb": mem.peak / 2 ** 20}


def summarise(samples: list[dict]) -> dict:
    out = {}
    for key in ("total", "text", "net", "decode", "png"):
        v = [s[key] for s in samples]
        out[key] = {"p50_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v), "max_ms": 1e3 * max(v),
                    "p95_ms": 1e3 * float(np.percentile(v, 95))}
    tot = out["total"]["p50_ms"]
    out["share_of_p50"] = {k: out[k]["p50_ms"] / tot for k in ("text", "net", "decode", "png")}
    return out


def latency_pool(nn_ref, avoid: set[str]) -> list[str]:
    """New prompts for the latency rounds: emoji names (the --nn-data captions) never used for the
    quality images, in a fixed shuffled order."""
    caps = sorted({c[0] for c in nn_ref.captions} - avoid) if nn_ref is not None else []
    if not caps:
        caps = [f"a {c} {s} on a white background" for c in ("red", "blue", "green", "yellow", "purple", "orange")
                for s in ("circle", "square", "triangle", "star", "heart", "hexagon")]
    order = torch.randperm(len(caps), generator=torch.Generator().manual_seed(14)).tolist()
    return [caps[i] for i in order]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="default")
    ap.add_argument("--shortcut", default=None, help="a distilled (shortcut) model folder")
    ap.add_argument("--consistency", default=None, help="a consistency-distilled model folder")
    ap.add_argument("--data", default=str(Path.home() / ".cache/blinkgen/datasets/emoji") + "+shapes:1500")
    ap.add_argument("--nn-data", default=str(Path.home() / ".cache/blinkgen/datasets/emoji"))
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=15, help="latency rounds (each rung once per round)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", nargs="*", default=["deep:2", "deep:3"])
    ap.add_argument("--engines", nargs="*", default=["bf16", "int8", "compile", "decoder-bf16"])
    ap.add_argument("--rungs", nargs="*", default=None, help="only rungs whose name starts with one of these")
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--evaluator", default=None, help="contrastive evaluator folder (default: the shipped one)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--render", default=None, help="print a results JSON as Markdown tables and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return {}
    if not args.out:
        ap.error("--out is required")
    if Path(args.out).exists() and not args.overwrite:
        ap.error(f"{args.out} exists; pass --overwrite to replace it")
    torch.set_num_threads(args.threads)
    t_start, load0 = time.perf_counter(), os.getloadavg()
    peers = _peers()
    rungs = build_rungs(args)
    from blinkgen.eval.contrastive import load_evaluator

    ref = build_reference(args.data, rungs[0].pipe.image_size, evaluator=load_evaluator(args.evaluator))
    prompts, seeds = run_prompts(ref, args.samples, 0)
    for r in rungs:
        r.pipe.encode_prompts(sorted(set(prompts)))
    with blas_threads(args.threads):
        peaks = {"fp32": matmul_peak_gflops(args.matmul_n), "bf16": bf16_peak_gflops(args.matmul_n)}
    print(f"matmul peaks: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s; load {load0[0]:.2f}", flush=True)
    flops = {}
    for r in rungs:
        src = r.plain or r.pipe
        if id(src) not in flops:
            flops[id(src)] = flops_per_pass(src)
        r.flops = flops[id(src)]
    nn_ref = None
    if args.nn_data:
        from blinkgen.data.folder import load_folder
        nn_ref = load_folder(args.nn_data, rungs[0].pipe.image_size)

    warm = {}
    for r in rungs:  # warm-up at both shapes; a compiled engine pays its compile here (recorded)
        t = time.perf_counter()
        r.images(prompts[:1], seeds[:1], peers)
        r.images(prompts[:args.batch], seeds[:args.batch], peers)
        warm[r.name] = time.perf_counter() - t
    results = {}
    for r in rungs:
        results[r.name] = quality_and_throughput(r, prompts, seeds, ref, args, peers, peaks, r.flops, nn_ref)
        q = results[r.name]["quality"]
        print(f"{r.name:44s} FD {q['fd']:.3f} align {q['alignment']:.3f} R@1 {q['retrieval_R@1']:.3f}"
              + (f" nn {q['nn']['hits']}/{q['nn']['n']}" if "nn" in q else "")
              + f"  b{args.batch} {results[r.name][f'batch{args.batch}_images_per_s']:.2f} img/s", flush=True)

    pool = latency_pool(nn_ref, set(prompts))
    loads = []
    for rnd in range(args.rounds):
        la = os.getloadavg()[0]
        k = rnd % len(rungs)
        for i, r in enumerate(rungs[k:] + rungs[:k]):  # rotated order: no rung always runs first
            r.latency.append(r.one(pool[rnd % len(pool)], 1000 + rnd, peers))
        loads.append([la, os.getloadavg()[0]])
        print(f"round {rnd + 1}/{args.rounds} load {la:.2f}: " + ", ".join(
            f"{r.name.split(' (')[0]} {1e3 * r.latency[-1]['total']:.0f}" for r in rungs), flush=True)

    rows = []
    for r in rungs:
        rows.append({"rung": r.name, "steps": r.steps, "guidance": r.guidance, "engine": r.engine,
                     "network_passes_per_image": r.passes, "gflop_per_pass": r.flops / 1e9,
                     "warmup_s": warm[r.name], "latency": summarise(r.latency), "latency_raw_s": r.latency,
                     **results[r.name]})
    out = {"what": "issue 14 blink ladder: quality, batch-64 throughput + MFU, batch-1 end-to-end latency "
                   "(new prompts, rungs interleaved per round)",
           "command": "python bench/bench_blink.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "teacher": args.teacher, "shortcut": args.shortcut, "consistency": args.consistency,
           "data": args.data, "nn_data": args.nn_data, "samples": args.samples, "batch": args.batch,
           "rounds": args.rounds, "threads": args.threads, "matmul_peak_gflops": peaks, "ceiling": ref.ceiling,
           "machine": {"cpus": os.cpu_count(), "load_average_at_start": list(load0),
                       "load_average_at_end": list(os.getloadavg()), "load_average_per_round": loads},
           "versions": versions(), "rungs": rows, "wall_s": time.perf_counter() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(render(out))
    return out


def render(r: dict) -> str:
    """The results as the Markdown table of bench/RESULTS.md (quality columns; latency medians
    with their range; stage shares of the median)."""
    b = r["batch"]
    ref = r["rungs"][0]
    lines = [f"| rung | passes/img | p50 ms b1 (min-max) | text / net / decode / png % | img/s b{b} | MFU b{b} | "
             "FD | align | R@1 | NN hits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rungs"]:
        lat, q = x["latency"], x["quality"]
        sh = lat["share_of_p50"]
        nn = q.get("nn")
        lines.append(f"| {x['rung']} | {x['network_passes_per_image']} | {lat['total']['p50_ms']:.0f} "
                     f"({lat['total']['min_ms']:.0f}-{lat['total']['max_ms']:.0f}) | "
                     f"{100 * sh['text']:.0f} / {100 * sh['net']:.0f} / {100 * sh['decode']:.0f} / {100 * sh['png']:.0f} | "
                     f"{x[f'batch{b}_images_per_s']:.2f} | {x['mfu']:.2f} ({x['mfu_peak']}) | {q['fd']:.3f} | "
                     f"{q['alignment']:.3f} | {q['retrieval_R@1']:.3f} | "
                     + (f"{nn['hits']}/{nn['n']}" if nn else "") + " |")
    la = r["machine"]
    lines += ["", f"Reference for the 10% rule: `{ref['rung']}`. Matmul peaks in this run: fp32 "
              f"{r['matmul_peak_gflops']['fp32']:.0f}, bf16 {r['matmul_peak_gflops']['bf16']:.0f} GFLOP/s; "
              f"{r['threads']} threads; load average {la['load_average_at_start'][0]:.1f} -> "
              f"{la['load_average_at_end'][0]:.1f} (per round: "
              f"{min(x[0] for x in la['load_average_per_round']):.1f}-{max(x[0] for x in la['load_average_per_round']):.1f})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
