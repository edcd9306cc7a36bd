"""Families side by side (not a test): the diffusion and the autoregressive generator on the same
data, prompts and seeds, each at its own default settings, speed and quality in one table.

Rows:
  diffusion        the model's default sampler/steps/guidance (more with --diffusion-settings)
  ar cached        static KV cache, CFG batched (the AR default)
  ar sjd           speculative Jacobi decoding, per --windows: the same distribution with fewer
                   network calls per image; under sampling its images differ from `cached` ones
                   draw by draw, so its FD/alignment differ by sampling noise, which the next row
                   measures
  ar cached, other seeds   `cached` again on seeds shifted by --noise-seed-offset: how much
                   FD/alignment move between two equally good runs (the yardstick for "within 5%")
  ar maskgit K     the parallel mode (--masked: a model trained with `--family maskgit` on the same
                   tokenizer and data), K passes per image for each K in --masked-steps; compared
                   with `cached` in `parallel_vs_plain` (a different network, so its quality is
                   that model's, not a re-draw of the causal one)

Shapes compositional accuracy: the held-out sample holds only a handful of shapes-grammar
prompts, so the default row of each family (and every maskgit row) also generates the committed
--shapes-prompts file (128 prompts, seeds 0..) and reads colour/shape/count/size/relation back from
the pixels (`blinkgen.eval.shapes_check.score`), as `blinkgen eval --prompts` does.

Each row reports images/s at batch 1 (p50/p95 latency over --repeats single-prompt calls, after a
warm-up call) and at batch --batch (default: all --samples at once), peak RSS, and the quality of
the batch images against the real held-out images, computed by the project's evaluation code
(`blinkgen.eval.evaluate.build_reference` / `run_prompts` / `score_images`: FD, KID, alignment,
R@1/R@5, shapes compositional accuracy). Prompt encodings are cached before timing, as in
bench_diffusion.py. Wall time is the headline; CPU seconds of this process are recorded beside
it because the machine may be shared (load average recorded too).

    python bench/bench_families.py --diffusion default --ar runs/ar/model \
        --data datasets/emoji+shapes:1500 --samples 64 --threads 2 --out bench/results/families.json
    python bench/bench_families.py --render bench/results/families.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from blinkgen.api import load
from blinkgen.errors import OutputExistsError
from blinkgen.eval.evaluate import build_reference, run_prompts, score_images, versions
from blinkgen.outputs import check_new, write_text
from blinkgen.pipeline import requests
from blinkgen.textio import read_lines

ROOT = Path(__file__).resolve().parent.parent
NOISE_SEED_OFFSET = 10_000  # far from the run's seeds 0..samples-1: an independent draw of images
WITHIN = 0.05  # the "speculative matches plain" tolerance the roadmap names (5%)


def _bench_diffusion():
    """bench_diffusion.py as a module (bench/ is not a package): PeakRSS and the timer are shared."""
    spec = importlib.util.spec_from_file_location("blinkgen_bench_diffusion", ROOT / "bench" / "bench_diffusion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _timed(fn):
    """(result, wall seconds, process CPU seconds) of fn()."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def run_row(gen, label: str, settings, prompts: list[str], seeds: list[int], ref, args, bd,
            setup=None, batch1: bool = True) -> dict:
    """Time one generator configuration at batch 1 and batch --batch; score the batch images."""
    if setup is not None:
        setup()
    run = lambda p, s: gen.sample(requests(p, s), settings)  # noqa: E731  (-> SampleResult)
    with bd.PeakRSS() as mem:
        lat, lat_cpu = [], []
        if batch1:
            run(prompts[:1], seeds[:1])  # warm-up (allocator, kernels, caches)
            for i in range(args.repeats):
                _, w, c = _timed(lambda i=i: run([prompts[i % len(prompts)]], [seeds[i % len(seeds)]]))
                lat.append(w)
                lat_cpu.append(c)
        images, wall, cpu, stats = [], 0.0, 0.0, []
        for i in range(0, len(prompts), args.batch):
            res, w, c = _timed(lambda i=i: run(prompts[i:i + args.batch], seeds[i:i + args.batch]))
            images += res.images
            wall, cpu = wall + w, cpu + c
            stats.append({"network_calls": res.network_calls, **res.stats})
    quality = score_images(images, prompts, ref)
    row = {"family": gen.family, "model": getattr(gen, "name", ""), "rung": label, "settings": settings.to_dict(),
           f"batch{args.batch}": {"images_per_s": len(images) / wall, "cpu_s_per_image": cpu / len(images),
                                   "n": len(images)},
           "peak_rss_mb": mem.peak / 2 ** 20, "quality": quality}
    if lat:
        row["batch1"] = {"images_per_s": 1.0 / statistics.mean(lat), "p50_s": float(np.percentile(lat, 50)),
                         "p95_s": float(np.percentile(lat, 95)), "cpu_s_per_image": statistics.mean(lat_cpu),
                         "n": len(lat)}
    tpp = [x for st in stats for x in st.get("tokens_per_pass", [])]
    if tpp:
        row["sjd_tokens_per_pass"] = statistics.mean(tpp)
        row["network_calls_per_image"] = statistics.mean(c for st in stats for c in st["network_calls"])
    else:
        calls = [c for st in stats for c in st["network_calls"]]
        row["network_calls_per_image"] = calls[0] if len(set(calls)) == 1 else statistics.mean(calls)
    sh = (quality.get("shapes") or {}).get("overall")
    b1 = row.get("batch1")
    one = f"b1 {b1['images_per_s']:7.2f} img/s p50 {b1['p50_s'] * 1e3:7.1f} ms" if b1 else f"{'(no batch-1 timing)':<35}"
    print(f"{gen.family:>9} {label:<22} {one}  b{args.batch} {row[f'batch{args.batch}']['images_per_s']:7.2f} img/s  "
          f"FD {quality['fd']:.4g}  align {quality['alignment']:.3f}" + (f"  shapes {sh:.3f}" if sh is not None else ""),
          flush=True)
    return row


def shapes_eval(gen, settings, prompts: list[str], batch: int) -> dict:
    """Compositional accuracy on a shapes prompt list, seeds 0..n-1, generated at `batch`."""
    from blinkgen.eval.shapes_check import score

    images = []
    for i in range(0, len(prompts), batch):
        images += gen.sample(requests(prompts[i:i + batch], list(range(i, min(i + batch, len(prompts))))),
                             settings).images
    out = score([np.asarray(im) for im in images], prompts)
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in out.items()}


def _rel(a: float, b: float) -> float:
    """Relative difference |a - b| / |b|."""
    return abs(a - b) / max(abs(b), 1e-12)


def compare_sjd(rows: list[dict]) -> list[dict]:
    """Each SJD row against plain cached decoding, next to the seed-to-seed noise of plain."""
    by = {r["rung"]: r for r in rows if r["family"] == "ar"}
    plain, noise = by.get("cached"), by.get("cached, other seeds")
    out = []
    for name, r in by.items():
        if not name.startswith("sjd") or plain is None:
            continue
        q, p = r["quality"], plain["quality"]
        c = {"rung": name, "fd_sjd": q["fd"], "fd_plain": p["fd"], "fd_rel_diff": _rel(q["fd"], p["fd"]),
             "alignment_sjd": q["alignment"], "alignment_plain": p["alignment"],
             "alignment_rel_diff": _rel(q["alignment"], p["alignment"])}
        c["within_5pct"] = c["fd_rel_diff"] <= WITHIN and c["alignment_rel_diff"] <= WITHIN
        if noise is not None:
            c["fd_rel_diff_plain_vs_other_seeds"] = _rel(noise["quality"]["fd"], p["fd"])
            c["alignment_rel_diff_plain_vs_other_seeds"] = _rel(noise["quality"]["alignment"], p["alignment"])
        if "batch1" in r and "batch1" in plain:
            c["speedup_batch1"] = r["batch1"]["images_per_s"] / plain["batch1"]["images_per_s"]
        out.append(c)
    return out


def compare_parallel(rows: list[dict], batch: int) -> list[dict]:
    """Each masked-mode row against plain cached decoding of the causal model: speed-ups at batch 1
    and at the batch size, and the relative quality differences."""
    plain = next((r for r in rows if r["family"] == "ar" and r["rung"] == "cached"), None)
    out = []
    for r in rows:
        if not r["rung"].startswith("maskgit") or plain is None:
            continue
        q, p = r["quality"], plain["quality"]
        c = {"rung": r["rung"], "fd": q["fd"], "fd_plain": p["fd"], "fd_rel_diff": _rel(q["fd"], p["fd"]),
             "alignment": q["alignment"], "alignment_plain": p["alignment"],
             "alignment_rel_diff": _rel(q["alignment"], p["alignment"]),
             f"speedup_batch{batch}": r[f"batch{batch}"]["images_per_s"] / plain[f"batch{batch}"]["images_per_s"]}
        if "batch1" in r and "batch1" in plain:
            c["speedup_batch1"] = r["batch1"]["images_per_s"] / plain["batch1"]["images_per_s"]
            c["cpu_speedup_batch1"] = plain["batch1"]["cpu_s_per_image"] / r["batch1"]["cpu_s_per_image"]
        out.append(c)
    return out


def render(r: dict) -> str:
    """A results JSON as Markdown tables."""
    b = r["batch"]
    lines = [f"Data `{r['data']}` ({r['samples']} prompts from the held-out captions, seeds {r['seed']}..), "
             f"{r['threads']} threads, load average {r['machine']['load_average_at_start'][0]} -> "
             f"{r['machine']['load_average_at_end'][0]}.", "",
             f"| family | rung | sampler / steps / guidance | img/s b1 | p50 / p95 ms b1 | img/s b{b} | CPU s/img b{b} | "
             "FD | KID | align | R@1 | shapes | notes |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        q, one, many, s = x["quality"], x.get("batch1"), x[f"batch{b}"], x["settings"]
        sh = (q.get("shapes") or {}).get("overall")
        notes = []
        if "sjd_tokens_per_pass" in x:
            notes.append(f"{x['sjd_tokens_per_pass']:.2f} tokens/pass")
        if "network_calls_per_image" in x:
            notes.append(f"{x['network_calls_per_image']:.1f} calls/img")
        b1 = (f"{one['images_per_s']:.2f} | {one['p50_s'] * 1e3:.0f} / {one['p95_s'] * 1e3:.0f}" if one else " | ")
        lines.append(f"| {x['family']} | {x['rung']} | {s['sampler']} / {s['steps']} / {s['guidance']:g} | {b1} | "
                     f"{many['images_per_s']:.2f} | {many['cpu_s_per_image']:.3f} | {q['fd']:.3f} | "
                     f"{q.get('kid', float('nan')):.1e} | {q['alignment']:.3f} | {q['retrieval_R@1']:.3f} | "
                     f"{'' if sh is None else f'{sh:.3f}'} | {', '.join(notes)} |")
    c = r["ceiling"]
    lines += ["", f"Real held-out images (the ceiling): alignment {c['real_alignment']:.3f}, "
              f"R@1 {c['real_retrieval_R@1']:.3f} over their own captions (n = {c['n_real']})"
              + (f"; FD between two halves {c['real_fd_between_halves']:.3f}" if c.get("real_fd_between_halves") else "")
              + "."]
    if r.get("sjd_vs_plain"):
        lines += ["", "| SJD rung | speed-up b1 | FD sjd / plain (rel.) | align sjd / plain (rel.) | within 5% | "
                  "plain vs other seeds: FD / align (rel.) |", "|---|---|---|---|---|---|"]
        for x in r["sjd_vs_plain"]:
            noise = (f"{x['fd_rel_diff_plain_vs_other_seeds']:.1%} / {x['alignment_rel_diff_plain_vs_other_seeds']:.1%}"
                     if "fd_rel_diff_plain_vs_other_seeds" in x else "")
            sp = f"{x['speedup_batch1']:.2f}x" if "speedup_batch1" in x else ""
            lines.append(f"| {x['rung']} | {sp} | {x['fd_sjd']:.3f} / {x['fd_plain']:.3f} ({x['fd_rel_diff']:.1%}) | "
                         f"{x['alignment_sjd']:.3f} / {x['alignment_plain']:.3f} ({x['alignment_rel_diff']:.1%}) | "
                         f"{'yes' if x['within_5pct'] else 'no'} | {noise} |")
    sh_rows = [x for x in r["rows"] if "shapes_eval" in x]
    if sh_rows:
        attrs = ["overall", "colour", "shape", "count", "size", "relation", "background"]
        lines += ["", f"Shapes compositional accuracy on `{r['shapes_prompts']}` "
                  f"({sh_rows[0]['shapes_eval'].get('n_colour', '?')} prompts with a colour):", "",
                  "| family | rung | " + " | ".join(attrs) + " |", "|---|---|" + "---|" * len(attrs)]
        for x in sh_rows:
            e = x["shapes_eval"]
            lines.append(f"| {x['family']} | {x['rung']} | " + " | ".join(
                "" if e.get(a) is None else f"{e[a]:.3f}" for a in attrs) + " |")
    if r.get("parallel_vs_plain"):
        lines += ["", f"| masked-mode rung | speed-up b1 (wall / CPU) | speed-up b{b} | FD masked / plain (rel.) | "
                  "align masked / plain (rel.) |", "|---|---|---|---|---|"]
        for x in r["parallel_vs_plain"]:
            sp = f"{x['speedup_batch1']:.2f}x / {x['cpu_speedup_batch1']:.2f}x" if "speedup_batch1" in x else ""
            lines.append(f"| {x['rung']} | {sp} | {x[f'speedup_batch{b}']:.2f}x | "
                         f"{x['fd']:.3f} / {x['fd_plain']:.3f} ({x['fd_rel_diff']:.1%}) | "
                         f"{x['alignment']:.3f} / {x['alignment_plain']:.3f} ({x['alignment_rel_diff']:.1%}) |")
    return "\n".join(lines) + "\n"


def parse_settings(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, k = item.partition(":")
        out.append((name, int(k)))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--diffusion", default="default", help="diffusion model: embedded name or folder ('' to skip)")
    ap.add_argument("--ar", default=None, help="AR model folder (omit to skip)")
    ap.add_argument("--masked", default=None, help="masked-mode (maskgit) model folder (omit to skip)")
    ap.add_argument("--masked-steps", type=int, nargs="*", default=[4, 8, 16], help="maskgit passes per image")
    ap.add_argument("--choice-temperatures", type=float, nargs="*", default=None,
                    help="maskgit Gumbel temperatures on which slots to keep (default: the model's)")
    ap.add_argument("--data", default="datasets/emoji+shapes:1500", help="spec whose held-out images are the reference")
    ap.add_argument("--samples", type=int, default=64, help="quality images per row (= the batch timing run)")
    ap.add_argument("--batch", type=int, default=None, help="batch size of the timing run (default: --samples)")
    ap.add_argument("--repeats", type=int, default=5, help="batch-1 timed calls per row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diffusion-settings", default="", help="extra sampler:steps rows beyond the default, e.g. euler:4")
    ap.add_argument("--windows", type=int, nargs="*", default=None, help="SJD windows (default: the model's)")
    ap.add_argument("--noise-seed-offset", type=int, default=NOISE_SEED_OFFSET,
                    help="seed shift of the 'cached, other seeds' row (0 skips the row)")
    ap.add_argument("--evaluator", default=None, help="contrastive evaluator folder (default: shipped)")
    ap.add_argument("--shapes-prompts", default=str(ROOT / "bench" / "prompts" / "shapes_eval.txt"),
                    help="shapes-grammar prompt file for compositional accuracy ('' to skip)")
    ap.add_argument("--out", help="results JSON (required unless --render)")
    ap.add_argument("--render", default=None, help="print a results JSON as Markdown and exit")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file (else refused)")
    args = ap.parse_args(argv)
    if args.out:  # refused before the benchmark runs, not after: one line, exit 2
        try:
            check_new([args.out], args.overwrite)
        except OutputExistsError as e:
            ap.error(str(e))
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return {}
    if not args.out:
        ap.error("--out is required")
    if not args.diffusion and not args.ar and not args.masked:
        ap.error("nothing to compare: give --diffusion, --ar and/or --masked")
    args.batch = args.batch or args.samples
    torch.set_num_threads(args.threads)
    t_start, load_avg = time.perf_counter(), os.getloadavg()
    bd = _bench_diffusion()
    from blinkgen.eval.contrastive import load_evaluator

    ev = load_evaluator(args.evaluator)
    gens = {}
    if args.diffusion:
        gens["diffusion"] = load(args.diffusion)
    if args.ar:
        gens["ar"] = load(args.ar)
    if args.masked:
        gens["masked"] = load(args.masked)
    refs: dict[int, object] = {}  # one reference per image size (the same prompts at any size)
    rows, prompts, seeds = [], None, None
    shapes_prompts = (read_lines(args.shapes_prompts, "--shapes-prompts file")
                      if args.shapes_prompts else [])

    def with_shapes(row: dict, gen, settings) -> dict:
        if shapes_prompts:
            gen.encode_prompts(sorted(set(shapes_prompts)))
            row["shapes_eval"] = shapes_eval(gen, settings, shapes_prompts, args.batch)
        return row

    for fam, gen in gens.items():
        if gen.image_size not in refs:
            refs[gen.image_size] = build_reference(args.data, gen.image_size, evaluator=ev)
        ref = refs[gen.image_size]
        p, s = run_prompts(ref, args.samples, args.seed)
        assert prompts is None or (p, s) == (prompts, seeds), "families must see the same prompts and seeds"
        prompts, seeds = p, s
        gen.encode_prompts(sorted(set(prompts)))  # warm the prompt cache: text cost is not timed
        base = gen.settings()
        # warm-up at the batch shape (allocator, kernels; the AR fused view is built on first use), so
        # the family's first row is not charged for it
        gen.sample(requests(prompts[:args.batch], seeds[:args.batch]), base)
        if fam == "diffusion":
            configs = [("default", base)] + [(f"{n}:{k}", gen.settings(k, None, n))
                                             for n, k in parse_settings(args.diffusion_settings)]
            for label, st in configs:
                row = run_row(gen, label, st, prompts, seeds, ref, args, bd)
                rows.append(with_shapes(row, gen, st) if label == "default" else row)
            continue
        if fam == "masked":
            cts = args.choice_temperatures or [gen.choice_temperature]
            for ct in cts:
                gen.choice_temperature = ct
                for k in args.masked_steps:
                    st = gen.settings(steps=k)
                    label = f"maskgit {k}" + (f", choice temp {ct:g}" if len(cts) > 1 else "")
                    row = run_row(gen, label, st, prompts, seeds, ref, args, bd)
                    row["choice_temperature"] = ct
                    rows.append(with_shapes(row, gen, st))
            continue
        plain = gen.settings(sampler="cached")
        rows.append(with_shapes(run_row(gen, "cached", plain, prompts, seeds, ref, args, bd), gen, plain))
        default_window = gen.window
        for w in (args.windows or [default_window]):
            rows.append(run_row(gen, f"sjd window {w}", gen.settings(sampler="sjd"), prompts, seeds, ref, args, bd,
                                setup=lambda w=w: setattr(gen, "window", w)))
        gen.window = default_window
        if args.noise_seed_offset:
            rows.append(run_row(gen, "cached, other seeds", plain, prompts,
                                [x + args.noise_seed_offset for x in seeds], ref, args, bd, batch1=False))
    first_ref = next(iter(refs.values()))
    result = {
        "what": "diffusion vs autoregressive family, speed + quality, CPU",
        "command": "python bench/bench_families.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": args.data, "prompts_source": first_ref.source,
        "shapes_prompts": (str(Path(args.shapes_prompts).resolve().relative_to(ROOT))
                           if args.shapes_prompts and Path(args.shapes_prompts).resolve().is_relative_to(ROOT)
                           else args.shapes_prompts or None), "samples": args.samples, "seed": args.seed,
        "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
        "models": {fam: {"name": getattr(g, "name", ""), "image_size": g.image_size,
                         "defaults": g.defaults.to_dict(),
                         **{k: v for k, v in getattr(g, "config", {}).items()
                            if k in ("training", "dit", "ar", "decode", "defaults")}} for fam, g in gens.items()},
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in load_avg],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "ceiling": first_ref.ceiling, "reference_unseen_by_evaluator": first_ref.unseen_by_evaluator,
        "ceiling_by_image_size": {str(k): r.ceiling for k, r in refs.items()},
        "evaluator": {"path": str(ev.folder), "sha256": ev.weights_sha256()},
        "versions": versions(), "rows": rows, "sjd_vs_plain": compare_sjd(rows),
        "parallel_vs_plain": compare_parallel(rows, args.batch),
        "wall_s": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2), args.overwrite)
    print(render(result), end="")
    print(f"wrote {out} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
