"""Diffusion speed + quality ladder (not a test): every rung on the same network, in one run.

Rungs (DESIGN.md speed ladder, diffusion column):
  ours       euler / heun / dpmpp2m at 4, 8, 20, 50 steps (CFG batched, one call per batch)
  naive      Euler 50 steps, CFG as two separate passes (bench/peers.py)
  diffusers  FlowMatchEulerDiscreteScheduler and DPMSolverMultistepScheduler (flow config)
             driving our DiT on our schedule, at --peer-steps (bench/peers.py)
Each rung reports images/s at batch 1 and at batch --batch (64), p50/p95 latency per image at
batch 1, NFE, peak RSS during the rung, model FLOPs utilisation against a fp32 matmul peak
measured in this run, and quality of the batch images (FD, KID, alignment, retrieval, shapes
accuracy) against the real held-out images (blinkgen.eval.evaluate). Ratios: ours / peer.

Honest-measurement rules: prompt encodings are cached before timing (as a server caches them;
the one-off text cost is reported separately); the quality images ARE the batch timing run; the
same prompts and seeds for every rung; torch and BLAS threads fixed (--threads); the machine's
load average is recorded, since a busy CPU slows every rung.

    python bench/bench_diffusion.py --model default --data datasets/emoji+shapes:4000 \
        --out bench/results/default.json            # ~15 min on a 2-core CPU (see --help)
    blinkgen bench --model M --out bench/results/NAME.json   # the same, via the CLI
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from blinkgen.api import load
from blinkgen.eval.evaluate import blas_threads, build_reference, reference_seen, run_prompts, score_images, versions
from blinkgen.outputs import parse_args_with_out, write_text
from blinkgen.pipeline import requests
from blinkgen.sampling.flow import nfe as sampler_nfe

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS = [f"{s}:{k}" for s in ("euler", "heun", "dpmpp2m") for k in (4, 8, 20, 50)]
MATMUL_N = 2048  # a 2048^3 fp32 matmul: big enough to reach BLAS peak, ~0.2-1 s on a laptop CPU


def _peers():
    spec = importlib.util.spec_from_file_location("blinkgen_bench_peers", ROOT / "bench" / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class PeakRSS:
    """Samples this process's resident set every 5 ms in a thread: the peak during a block.
    (tracemalloc does not see torch's C++ allocations; getrusage's maxrss never goes down.)"""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.start = self._rss()
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


def matmul_peak_gflops(n: int = MATMUL_N, repeats: int = 5) -> float:
    """Best-of-`repeats` fp32 GFLOP/s of an n x n matmul at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def flops_per_image_nfe(gen) -> float:
    """Model FLOPs of one network evaluation for one image (no CFG), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    cond, _ = gen.encode_prompts(["a red circle"])
    x = gen.initial_noise([0])
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        gen.net(x, torch.ones(1), cond.states, cond.mask, cond.pooled)
    return float(fc.get_total_flops())


def rung_runner(gen, peers, name: str, steps: int, guidance: float):
    """A function (prompts, seeds) -> PIL images for one rung."""
    if name in peers.PEERS:
        return lambda p, s: peers.peer_images(gen, name, p, s, steps, guidance)
    settings = gen.settings(steps, guidance, name)
    return lambda p, s: gen.sample(requests(p, s), settings).images


def passes_per_image(name: str, steps: int, guidance: float) -> tuple[int, int]:
    """(NFE, network image-passes): NFE counts solver evaluations; passes double it with CFG."""
    n = steps if name in ("naive", "diffusers_euler", "diffusers_dpmpp2m") else sampler_nfe(name, steps)
    return n, n * (1 if guidance == 1.0 else 2)


def bench_rung(gen, peers, ref, name, steps, args, prompts, seeds, flops_nfe, peak_gflops) -> dict:
    run = rung_runner(gen, peers, name, steps, args.guidance)
    nfe, passes = passes_per_image(name, steps, args.guidance)
    with PeakRSS() as mem:
        run(prompts[:1], seeds[:1])  # warm-up (allocator, caches)
        lat = [_time(lambda i=i: run([prompts[i]], [seeds[i]])) for i in range(args.repeats)]
        images, batch_times = [], []
        for i in range(0, len(prompts), args.batch):
            t = time.perf_counter()
            images += run(prompts[i:i + args.batch], seeds[i:i + args.batch])
            batch_times.append(time.perf_counter() - t)
    ips_b1 = 1.0 / statistics.mean(lat)
    ips_bn = len(images) / sum(batch_times)
    mfu = lambda ips: ips * passes * flops_nfe / (peak_gflops * 1e9)  # noqa: E731  decode excluded
    quality = score_images(images, prompts, ref)
    r = {"rung": name, "steps": steps, "nfe": nfe, "network_passes_per_image": passes,
         "batch1": {"images_per_s": ips_b1, "p50_s": float(np.percentile(lat, 50)),
                    "p95_s": float(np.percentile(lat, 95)), "n": len(lat), "mfu": mfu(ips_b1)},
         f"batch{args.batch}": {"images_per_s": ips_bn, "mfu": mfu(ips_bn), "n": len(images)},
         "peak_rss_mb": mem.peak / 2 ** 20, "rss_growth_mb": (mem.peak - mem.start) / 2 ** 20,
         "quality": quality}
    sh = quality.get("shapes", {}).get("overall")
    print(f"{name:>18} {steps:3d} steps  b1 {ips_b1:7.2f} img/s p50 {r['batch1']['p50_s'] * 1e3:7.1f} ms  "
          f"b{args.batch} {ips_bn:7.2f} img/s  MFU {mfu(ips_bn):.3f}  FD {quality['fd']:.4g}  "
          f"align {quality['alignment']:.3f}" + (f"  shapes {sh:.3f}" if sh is not None else ""), flush=True)
    return r


def ratios(rungs: list[dict], batch: int) -> list[dict]:
    """ours / peer on the same math: naive@K vs euler@K; diffusers_X@K vs X@K."""
    by = {(r["rung"], r["steps"]): r for r in rungs}
    pairs = [(("euler", r["steps"]), ("naive", r["steps"])) for r in rungs if r["rung"] == "naive"]
    for r in rungs:
        if r["rung"].startswith("diffusers_"):
            pairs.append(((r["rung"].removeprefix("diffusers_"), r["steps"]), (r["rung"], r["steps"])))
    out = []
    for ours, peer in pairs:
        if ours in by and peer in by:
            a, b = by[ours], by[peer]
            out.append({"ours": f"{ours[0]}@{ours[1]}", "peer": f"{peer[0]}@{peer[1]}",
                        "speedup_batch1": a["batch1"]["images_per_s"] / b["batch1"]["images_per_s"],
                        f"speedup_batch{batch}": a[f"batch{batch}"]["images_per_s"] / b[f"batch{batch}"]["images_per_s"],
                        "fd_ours": a["quality"]["fd"], "fd_peer": b["quality"]["fd"],
                        "alignment_ours": a["quality"]["alignment"], "alignment_peer": b["quality"]["alignment"]})
    return out


def parse_settings(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, k = item.strip().partition(":")
        out.append((name, int(k)))
    return out


def render(r: dict) -> str:
    """A results JSON as the Markdown tables of bench/RESULTS.md."""
    b = r["batch"]
    lines = [f"Model `{r['model']}`, data `{r['data']}` ({r['samples']} prompts from the held-out captions, "
             f"seeds {r['seed']}..), guidance {r['guidance']}, {r['threads']} threads, matmul peak "
             f"{r['matmul_peak_gflops']:.0f} GFLOP/s, {r['gflops_per_image_nfe']:.3f} GFLOP per image-NFE, "
             f"load average {r['machine']['load_average_at_start'][0]} -> {r['machine']['load_average_at_end'][0]}.", "",
             f"| rung | steps | NFE | img/s b1 | p50 / p95 ms b1 | img/s b{b} | MFU b{b} | peak RSS MB | FD | KID | "
             "align | R@1 | shapes |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rungs"]:
        q, one, many = x["quality"], x["batch1"], x[f"batch{b}"]
        sh = (q.get("shapes") or {}).get("overall")
        lines.append(f"| {x['rung']} | {x['steps']} | {x['nfe']} | {one['images_per_s']:.2f} | "
                     f"{one['p50_s'] * 1e3:.0f} / {one['p95_s'] * 1e3:.0f} | {many['images_per_s']:.2f} | "
                     f"{many['mfu']:.2f} | {x['peak_rss_mb']:.0f} | {q['fd']:.3f} | {q.get('kid', float('nan')):.1e} | "
                     f"{q['alignment']:.3f} | {q['retrieval_R@1']:.3f} | {'' if sh is None else f'{sh:.3f}'} |")
    c = r["ceiling"]
    same = r["rungs"][0]["quality"].get("real_same_prompts") if r["rungs"] else None
    lines += ["", f"Real held-out images (the ceiling): alignment {c['real_alignment']:.3f}, "
              f"R@1 {c['real_retrieval_R@1']:.3f} over their own captions (n = {c['n_real']})"
              + (f"; FD between two halves {c['real_fd_between_halves']:.3f}" if c.get("real_fd_between_halves") else "")
              + (f"; the real images of this run's prompts: R@1 {same['retrieval_R@1']:.3f}, alignment "
                 f"{same['alignment']:.3f} (n = {same['n']}, same candidates as the table)" if same else "") + ".", "",
              f"| ours | peer | speed-up b1 | speed-up b{b} | FD ours / peer | align ours / peer |", "|---|---|---|---|---|---|"]
    for x in r["ratios"]:
        lines.append(f"| {x['ours']} | {x['peer']} | {x['speedup_batch1']:.2f}x | {x[f'speedup_batch{b}']:.2f}x | "
                     f"{x['fd_ours']:.3f} / {x['fd_peer']:.3f} | {x['alignment_ours']:.3f} / {x['alignment_peer']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None, prog: str | None = None) -> dict:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="default", help="embedded model name or model folder")
    ap.add_argument("--data", default="datasets/emoji+shapes:4000", help="spec whose held-out images are the reference")
    ap.add_argument("--out", help="results JSON, e.g. bench/results/NAME.json (required unless --render)")
    ap.add_argument("--render", default=None, help="print a results JSON as Markdown tables and exit")
    ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help="sampler:steps,... for our rungs")
    ap.add_argument("--peer-steps", default="20", help="steps for the diffusers peers (comma list); naive is 50")
    ap.add_argument("--naive-steps", type=int, default=50, help="steps of the naive peer (the DESIGN rung: 50)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--samples", type=int, default=64, help="quality images per rung (= the batch timing run)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="batch-1 timed calls per rung (p95 of 5 = the max)")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--evaluator", default=None, help="contrastive evaluator folder (default: shipped)")
    ap.add_argument("--matmul-n", type=int, default=MATMUL_N, help="side of the square matmul that sets the peak")
    args = parse_args_with_out(ap, argv)  # an existing --out: refused now, exit 2
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return {}
    if not args.out:
        ap.error("--out is required")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_avg = os.getloadavg()
    peers = _peers()

    gen = load(args.model)
    args.guidance = gen.defaults.guidance if args.guidance is None else args.guidance
    from blinkgen.eval.contrastive import load_evaluator

    ref = build_reference(args.data, gen.image_size, evaluator=load_evaluator(args.evaluator))
    prompts, seeds = run_prompts(ref, args.samples, args.seed)
    t = time.perf_counter()
    gen.encode_prompts(sorted(set(prompts)))  # warm the prompt cache: text cost measured once, here
    text_s = (time.perf_counter() - t) / len(set(prompts))
    with blas_threads(args.threads):
        peak = matmul_peak_gflops(args.matmul_n)
    flops_nfe = flops_per_image_nfe(gen)
    print(f"matmul peak {peak:.1f} GFLOP/s ({args.threads} threads); {flops_nfe / 1e9:.3f} GFLOP per image-NFE; "
          f"text {text_s * 1e3:.1f} ms/prompt; load average {load_avg[0]:.2f}", flush=True)

    # warm-up at the batch shape (allocator, oneDNN kernels), so the first rung is not charged for it
    gen.sample(requests(prompts[:args.batch], seeds[:args.batch]), gen.settings(1, args.guidance, "euler"))
    ladder = parse_settings(args.settings)
    if not args.no_peers:
        ladder.append(("naive", args.naive_steps))
        for k in (int(s) for s in args.peer_steps.split(",") if s.strip()):
            ladder += [("diffusers_euler", k), ("diffusers_dpmpp2m", k)]
    rungs, work_done, t_ladder = [], 0, time.perf_counter()
    work = [passes_per_image(n, k, args.guidance)[1] * (args.samples + args.repeats + 1) for n, k in ladder]
    for i, (name, steps) in enumerate(ladder):
        rungs.append(bench_rung(gen, peers, ref, name, steps, args, prompts, seeds, flops_nfe, peak))
        work_done += work[i]
        rate = (time.perf_counter() - t_ladder) / work_done  # seconds per image-pass so far
        print(f"    {time.perf_counter() - t_start:.0f} s so far; about {rate * sum(work[i + 1:]):.0f} s to go", flush=True)
    result = {
        "what": "diffusion speed + quality ladder, CPU", "command": "python bench/bench_diffusion.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "model": args.model, "model_config": {k: v for k, v in getattr(gen, "config", {}).items()
                                              if k in ("dit", "image_size", "defaults", "schedule_shift", "training")},
        "data": args.data, "prompts_source": ref.source, "samples": args.samples, "seed": args.seed,
        "guidance": args.guidance, "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in load_avg],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "matmul_peak_gflops": peak, "gflops_per_image_nfe": flops_nfe / 1e9, "text_encode_s_per_prompt": text_s,
        "ceiling": ref.ceiling, "reference_unseen_by_evaluator": ref.unseen_by_evaluator,
        "reference_seen_by_generator": reference_seen(gen, ref), "versions": versions(), "rungs": rungs, "ratios": ratios(rungs, args.batch),
        "wall_s": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2), args.overwrite)
    for r in result["ratios"]:
        print(f"{r['ours']:>12} vs {r['peer']:<22} speed-up b1 {r['speedup_batch1']:.2f}x  "
              f"b{args.batch} {r[f'speedup_batch{args.batch}']:.2f}x  FD {r['fd_ours']:.4g} vs {r['fd_peer']:.4g}")
    print(f"wrote {out} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
