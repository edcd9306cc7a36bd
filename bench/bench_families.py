"""Families side by side (not a test): the diffusion, autoregressive, GAN and VAE generators on the
same data, prompts and seeds, each at its own default settings, speed and quality in one table.

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
  gan              the one-pass generator (--gan), at its default truncation and each of
                   --gan-truncations
  vae              the text-conditional VAE (--vae), sampling its prior at its default
                   temperature and each of --vae-temperatures

Every family's default row also gets the checks of bench/family_checks.py: nearest-neighbour
recognisability on the emoji names of --nn-prompts against the emoji folder --nn-data, and the
mode-collapse check (8 seeds of one prompt vs the real spread of that emoji's variants).
`onepass_vs_diffusion` gives each GAN/VAE row's batch-1 and batch-N speed-up over the diffusion
default row.

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
from blinkgen.eval.evaluate import build_reference, reference_seen, run_prompts, score_images, versions
from blinkgen.outputs import parse_args_with_out, write_text
from blinkgen.pipeline import requests
from blinkgen.textio import read_lines

ROOT = Path(__file__).resolve().parent.parent
NOISE_SEED_OFFSET = 10_000  # far from the run's seeds 0..samples-1: an independent draw of images


def _bench_module(name: str):
    """bench/<name>.py as a module (bench/ is not a package): bench_diffusion's PeakRSS and timer,
    family_checks' recognisability and mode-collapse checks."""
    spec = importlib.util.spec_from_file_location(f"blinkgen_{name}", ROOT / "bench" / f"{name}.py")
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
    ap.add_argument("--gan", default=None, help="GAN model folder (omit to skip)")
    ap.add_argument("--gan-truncations", type=float, nargs="*", default=[], help="extra GAN rows at these truncations")
    ap.add_argument("--vae", default=None, help="VAE model folder (omit to skip)")
    ap.add_argument("--vae-temperatures", type=float, nargs="*", default=[], help="extra VAE rows at these temperatures")
    ap.add_argument("--nn-data", default="", help="emoji folder (e.g. ~/.cache/blinkgen/datasets/emoji) for the "
                    "recognisability and mode-collapse checks of each default row (omit to skip them)")
    ap.add_argument("--nn-prompts", default=str(ROOT / "bench" / "prompts" / "default_grid.txt"),
                    help="emoji-name prompts of the recognisability check")
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
    args = parse_args_with_out(ap, argv)  # an existing --out: refused now, exit 2
    if args.render:
        print(_bench_module("families_report").render(json.loads(Path(args.render).read_text())), end="")
        return {}
    if not args.out:
        ap.error("--out is required")
    if not any((args.diffusion, args.ar, args.masked, args.gan, args.vae)):
        ap.error("nothing to compare: give --diffusion, --ar, --masked, --gan and/or --vae")
    args.batch = args.batch or args.samples
    torch.set_num_threads(args.threads)
    t_start, load_avg = time.perf_counter(), os.getloadavg()
    bd, fc, rep = (_bench_module(n) for n in ("bench_diffusion", "family_checks", "families_report"))
    from blinkgen.eval.contrastive import load_evaluator

    ev = load_evaluator(args.evaluator)
    gens = {}
    if args.diffusion:
        gens["diffusion"] = load(args.diffusion)
    if args.ar:
        gens["ar"] = load(args.ar)
    if args.masked:
        gens["masked"] = load(args.masked)
    for fam in ("gan", "vae"):
        if getattr(args, fam):
            gens[fam] = load(getattr(args, fam))
    emoji = {}  # image size -> the emoji folder at that size, for the checks
    refs: dict[int, object] = {}  # one reference per image size (the same prompts at any size)
    rows, prompts, seeds = [], None, None
    shapes_prompts = (read_lines(args.shapes_prompts, "--shapes-prompts file")
                      if args.shapes_prompts else [])

    def with_shapes(row: dict, gen, settings) -> dict:
        """The default row's extras: shapes accuracy, recognisability, mode collapse."""
        if shapes_prompts:
            gen.encode_prompts(sorted(set(shapes_prompts)))
            row["shapes_eval"] = shapes_eval(gen, settings, shapes_prompts, args.batch)
        if args.nn_data:
            if gen.image_size not in emoji:
                from blinkgen.data.folder import load_folder
                emoji[gen.image_size] = load_folder(Path(args.nn_data).expanduser(), gen.image_size)
            nn_prompts = [ln.strip() for ln in Path(args.nn_prompts).read_text().splitlines() if ln.strip()]
            row["nn"] = fc.nn_check(gen, settings, nn_prompts, emoji[gen.image_size], args.batch)
            row["diversity"] = fc.diversity(gen, settings, emoji[gen.image_size], ev)
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
        if fam in ("gan", "vae"):
            knob, values = ("truncation", args.gan_truncations) if fam == "gan" else ("temperature", args.vae_temperatures)
            rows.append(with_shapes(run_row(gen, "default", base, prompts, seeds, ref, args, bd), gen, base))
            for v in values:
                rows.append(run_row(gen, f"{knob} {v:g}", gen.settings(**{knob: v}), prompts, seeds, ref, args, bd))
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
        "what": "generator families side by side (diffusion, autoregressive, GAN, VAE), speed + quality, CPU",
        "command": "python bench/bench_families.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": args.data, "prompts_source": first_ref.source,
        "shapes_prompts": (str(Path(args.shapes_prompts).resolve().relative_to(ROOT))
                           if args.shapes_prompts and Path(args.shapes_prompts).resolve().is_relative_to(ROOT)
                           else args.shapes_prompts or None), "samples": args.samples, "seed": args.seed,
        "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
        "models": {fam: {"name": getattr(g, "name", ""), "image_size": g.image_size,
                         "defaults": g.defaults.to_dict(),
                         **{k: v for k, v in getattr(g, "config", {}).items()
                            if k in ("training", "dit", "ar", "decode", "defaults", "generator", "cvae", "space",
                                     "preset")}} for fam, g in gens.items()},
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in load_avg],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "ceiling": first_ref.ceiling, "reference_unseen_by_evaluator": first_ref.unseen_by_evaluator,
        # per family: held-out reference images its lineage trained on (eval/leakage.py; 0 = clean)
        "reference_seen_by_generator": {fam: reference_seen(g, refs[g.image_size]) for fam, g in gens.items()},
        "ceiling_by_image_size": {str(k): r.ceiling for k, r in refs.items()},
        "evaluator": {"path": str(ev.folder), "sha256": ev.weights_sha256()},
        "versions": versions(), "rows": rows, "sjd_vs_plain": rep.compare_sjd(rows),
        "parallel_vs_plain": rep.compare_parallel(rows, args.batch),
        "onepass_vs_diffusion": rep.compare_onepass(rows, args.batch),
        "wall_s": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2), args.overwrite)
    print(rep.render(result), end="")
    print(f"wrote {out} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
