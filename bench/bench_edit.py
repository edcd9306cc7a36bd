"""Images in (issue 12), measured (not a test). Four benchmarks, each on held-out images (the
training loop's own split of --data, seed 0, so the model never saw them), each a JSON:

  inpaint  64 images, a centre mask (the middle quarter of the area), prompt = the image's own
           caption. Outside the mask: mean |difference| to the input (0-255) against the
           autoencoder round trip's. Inside: alignment to the prompt and FD against the real
           held-out images (the evaluator's space), next to the real images and text-to-image
           of the same prompts and seeds.
  sweep    img2img strength 0.2..1.0 on 64 images towards ANOTHER held-out caption: similarity to
           the input (evaluator image cosine; mean |pixel difference|) against alignment to the
           new prompt; a plot (--plot).
  style    style transfer by prompt: held-out emoji of one style edited with the model's `style`
           setting set to the other; the evaluator ranks every "<subject> in <style> style" of the
           set; success = its top-1 is the same subject in the target style. Baselines: the
           inputs themselves, and real images read as their own style (the ceiling).
  sr       x2 super-resolution on held-out 128-px images (LANCZOS-degraded to 64, as in
           training): PSNR and SSIM (scikit-image) of the upscaler against bicubic and Lanczos.

    python bench/bench_edit.py inpaint --model default --data ~/.cache/blinkgen/datasets/emoji+shapes:1500 --out bench/results/edit_inpaint.json
    python bench/bench_edit.py sweep --model default --data ... --out bench/results/edit_sweep.json --plot bench/results/edit_sweep.png
    python bench/bench_edit.py style --model default --data ... --out bench/results/edit_style.json
    python bench/bench_edit.py sr --upscaler upscaler --data noto-font+shapes:1500 --out bench/results/edit_sr.json --grid bench/results/edit_sr.png
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import blinkgen
from blinkgen.eval import metrics as M
from blinkgen.eval.contrastive import held_out_split, load_evaluator
from blinkgen.eval.leakage import image_hashes, seen_by_generator
from blinkgen.eval.evaluate import blas_threads, model_config, versions
from blinkgen.models.autoencoder import to_pixels, to_uint8
from blinkgen.pipeline import Request
from blinkgen.text.style import styled

STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
ORDER_SEED = 0  # the held-out images' order (a fixed shuffle: the split keeps dataset order)


def held_out(spec: str, size: int, seed: int = 0):
    from blinkgen.data.registry import load_dataset

    held = held_out_split(load_dataset(spec, size, seed), seed)[1]
    order = torch.randperm(len(held), generator=torch.Generator().manual_seed(ORDER_SEED)).tolist()
    return held.subset(order)


def pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray(t.permute(1, 2, 0).numpy())


def arrays(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.float64) for im in images])  # (N, H, W, 3)


def centre_mask(size: int) -> Image.Image:
    m = Image.new("L", (size, size), 0)
    m.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return m


def sample(pipe, reqs, settings, batch: int):
    out = []
    for i in range(0, len(reqs), batch):
        out += pipe.sample(reqs[i:i + batch], settings).images
    return out


def bench_inpaint(args, pipe, ev) -> dict:
    held = held_out(args.data, pipe.image_size)
    n = min(args.samples, len(held))
    real = [pil(t) for t in held.images[:n]]
    prompts = [c[0] for c in held.captions[:n]]
    S = pipe.image_size
    mask = centre_mask(S)
    keep = np.asarray(mask) == 0  # (S, S)
    s = pipe.settings()
    t0 = time.perf_counter()
    ours = sample(pipe, [Request(p, i, init_image=im, mask=mask) for i, (p, im) in enumerate(zip(prompts, real))], s, args.batch)
    t_inpaint = time.perf_counter() - t0
    # the same edits without the final pixel composite: what the latent blending alone keeps
    import blinkgen.families.diffusion.pipeline as dp

    with_composite = dp.composite
    dp.composite = lambda generated, init, repaint: generated
    try:
        raw = sample(pipe, [Request(p, i, init_image=im, mask=mask) for i, (p, im) in enumerate(zip(prompts, real))],
                     s, args.batch) if pipe.family == "diffusion" else None
    finally:
        dp.composite = with_composite
    t2i = sample(pipe, [Request(p, i) for i, p in enumerate(prompts)], s, args.batch)
    with torch.inference_mode():
        x = held.images[:n]
        rt = [pil(t) for t in to_uint8(pipe.ae.decode(pipe.ae.encode(to_pixels(x)))).cpu()]
    R, O, T = arrays(real), arrays(ours), arrays(rt)

    def outside(a):
        return float(np.abs(a - R)[:, keep].mean())

    def inside(a):
        return float(np.abs(a - R)[:, ~keep].mean())

    all_real = ev.embed_images(held.images)
    txt = ev.embed_texts(prompts)
    with blas_threads():
        def quality(images):
            e = ev.embed_images(images)
            return {"alignment": M.alignment(e, txt), "fd_vs_real_held_out": M.frechet_distance(e, all_real)}
        return {"n": n, "mask": "centre square, a quarter of the area", "settings": s.to_dict(),
                "outside_mean_abs_diff": {"inpainted": outside(O), "autoencoder_round_trip": outside(T),
                                          **({"before_pixel_composite": outside(arrays(raw))} if raw else {})},
                "inside_mean_abs_diff_to_original": {"inpainted": inside(O), "autoencoder_round_trip": inside(T)},
                "inpainted": quality(ours), "text_to_image_same_prompts": quality(t2i),
                "real_images": quality(real), "autoencoder_round_trip": quality(rt),
                "n_real_held_out": len(all_real), "seconds_inpaint": t_inpaint}


def bench_sweep(args, pipe, ev) -> dict:
    held = held_out(args.data, pipe.image_size)
    n = min(args.samples, len(held))
    src = [pil(t) for t in held.images[:n]]
    old = [c[0] for c in held.captions[:n]]
    new = [old[(i + n // 2) % n] for i in range(n)]  # another held-out subject
    s = pipe.settings()
    e_src = ev.embed_images(src)
    t_new, t_old = ev.embed_texts(new), ev.embed_texts(old)
    rows = []
    for st in args.strengths:
        out = sample(pipe, [Request(p, i, init_image=im, strength=st) for i, (p, im) in enumerate(zip(new, src))], s, args.batch)
        e = ev.embed_images(out)
        rows.append({"strength": st, "similarity_to_input": float((e * e_src).sum(-1).mean()),
                     "mean_abs_pixel_diff": float(np.abs(arrays(out) - arrays(src)).mean()),
                     "alignment_new_prompt": M.alignment(e, t_new), "alignment_old_prompt": M.alignment(e, t_old)})
        print(json.dumps(rows[-1]), flush=True)
    base = {"input_alignment_new_prompt": M.alignment(e_src, t_new), "input_alignment_old_prompt": M.alignment(e_src, t_old)}
    res = {"n": n, "settings": s.to_dict(), "rows": rows, "inputs": base}
    if args.plot:
        plot_sweep(res, args.plot)
    return res


def plot_sweep(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=110)
    x = [r["similarity_to_input"] for r in rows]
    y = [r["alignment_new_prompt"] for r in rows]
    ax.plot(x, y, "o-")
    for r, xi, yi in zip(rows, x, y):
        ax.annotate(f"s={r['strength']:.1f}", (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(res["inputs"]["input_alignment_new_prompt"], ls=":", c="grey", label="input image vs new prompt")
    ax.set_xlabel("similarity to the input (evaluator image cosine)")
    ax.set_ylabel("alignment to the new prompt")
    ax.set_title(f"img2img strength sweep ({res['n']} held-out images)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def bench_style(args, pipe, ev) -> dict:
    held = held_out(args.data, pipe.image_size)
    styles = held.style_list()
    idx = [i for i, st in enumerate(styles) if st][: args.samples]
    names = sorted({styles[i] for i in idx})
    if len(names) < 2:
        raise SystemExit(f"need held-out images of two styles, found {names}")
    subjects = [held.captions[i][0] for i in idx]
    src_style = [styles[i] for i in idx]
    target = [next(t for t in names if t != st) for st in src_style]
    images = [pil(held.images[i]) for i in idx]
    cands = [(sub, st) for sub in dict.fromkeys(subjects) for st in names]
    c_emb = ev.embed_texts([styled(sub, st) for sub, st in cands])  # (C, 384)
    pos = {c: k for k, c in enumerate(cands)}

    def read(imgs, want_style) -> dict:
        e = ev.embed_images(imgs)
        sim = e @ c_emb.T  # (N, C)
        top = sim.argmax(1).tolist()
        both = [cands[t] == (sub, st) for t, sub, st in zip(top, subjects, want_style)]
        style_ok = [float(sim[i, pos[(sub, st)]]) > max(float(sim[i, pos[(sub, o)]]) for o in names if o != st)
                    for i, (sub, st) in enumerate(zip(subjects, want_style))]
        subj_ok = [cands[int(max(range(len(cands)), key=lambda k: float(sim[i, k]) if cands[k][1] == st else -9))][0] == sub
                   for i, (sub, st) in enumerate(zip(subjects, want_style))]
        return {"target_style_and_same_subject": float(np.mean(both)), "target_style": float(np.mean(style_ok)),
                "same_subject_among_target_style": float(np.mean(subj_ok))}

    out = {"n": len(idx), "styles": names, "candidates": len(cands),
           "real_images_read_as_their_own_style": read(images, src_style),
           "inputs_read_as_target_style": read(images, target)}
    for st in args.strengths:
        edits = []
        for name in names:  # the style is a setting: one batch per target style
            rows = [k for k, t in enumerate(target) if t == name]
            s = pipe.settings(style=name)
            got = sample(pipe, [Request(subjects[k], k, init_image=images[k], strength=st) for k in rows], s, args.batch)
            edits += list(zip(rows, got))
        edits = [im for _, im in sorted(edits, key=lambda r: r[0])]
        out[f"edited_strength_{st}"] = read(edits, target)
        print(st, json.dumps(out[f"edited_strength_{st}"]), flush=True)
    return out


def bench_sr(args) -> dict:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from blinkgen.families.upscaler.folder import degrade

    up = blinkgen.load(args.upscaler)
    held = held_out(args.data, up.image_size)
    hr = held.images
    lr = degrade(hr, up.image_size // up.input_size)
    t0 = time.perf_counter()
    ours = up.upscale(lr)
    t_ours = time.perf_counter() - t0
    size = (up.image_size, up.image_size)
    methods = {"upscaler": [t.permute(1, 2, 0).numpy() for t in ours]}
    for name, f in (("bicubic", Image.Resampling.BICUBIC), ("lanczos", Image.Resampling.LANCZOS)):
        methods[name] = [np.asarray(pil(t).resize(size, f)) for t in lr]
    truth = [t.permute(1, 2, 0).numpy() for t in hr]
    parts = held.part_list()
    out = {"n": len(hr), "upscaler": str(args.upscaler), "config": up.config.get("upscaler"),
           "seconds_per_image": t_ours / len(hr)}
    for name, ims in methods.items():
        p = [peak_signal_noise_ratio(t, im, data_range=255) for t, im in zip(truth, ims)]
        s = [structural_similarity(t, im, data_range=255, channel_axis=-1) for t, im in zip(truth, ims)]
        out[name] = {"psnr_db": float(np.mean(p)), "ssim": float(np.mean(s)),
                     "by_part": {str(k): {"n": int(sum(1 for q in parts if q == k)),
                                          "psnr_db": float(np.mean([v for v, q in zip(p, parts) if q == k])),
                                          "ssim": float(np.mean([v for v, q in zip(s, parts) if q == k]))}
                                 for k in sorted(set(parts))}}
    out["beats_both"] = all(out["upscaler"][m] > out[b][m] for b in ("bicubic", "lanczos") for m in ("psnr_db", "ssim"))
    if args.grid:  # rows: bicubic, Lanczos, the upscaler, the original; 8 held-out images
        from blinkgen.pngmeta import grid

        k = list(range(min(8, len(hr))))
        rows = [methods["bicubic"], methods["lanczos"], methods["upscaler"], truth]
        grid([Image.fromarray(r[i]) for r in rows for i in k], cols=len(k)).save(args.grid)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["inpaint", "sweep", "style", "sr"])
    ap.add_argument("--model", default="default", help="diffusion (or masked AR) model for inpaint/sweep/style")
    ap.add_argument("--upscaler", default="upscaler", help="upscaler model for sr")
    ap.add_argument("--data", default="datasets/emoji+shapes:1500")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--strengths", type=float, nargs="+", default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default=None, help="sweep: write the plot here (PNG)")
    ap.add_argument("--grid", default=None, help="sr: write a comparison grid here (PNG)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    if Path(args.out).exists() and not args.overwrite:
        ap.error(f"{args.out} exists; pass --overwrite to replace it")
    torch.set_num_threads(args.threads)
    args.strengths = args.strengths or (list(STRENGTHS) if args.what == "sweep" else [0.6, 0.8])
    t0 = time.perf_counter()
    if args.what == "sr":
        res = bench_sr(args)
        scored = blinkgen.load(args.upscaler)
    else:
        pipe, ev = blinkgen.load(args.model), load_evaluator()
        res = {"inpaint": bench_inpaint, "sweep": bench_sweep, "style": bench_style}[args.what](args, pipe, ev)
        res["model"] = args.model
        scored = pipe
    # the held-out images these scores use that the model's lineage trained on (0 = clean)
    res["reference_seen_by_generator"] = seen_by_generator(
        model_config(scored), args.data, 0, image_hashes(held_out(args.data, scored.image_size).images), scored.image_size)
    import os

    res.update({"benchmark": args.what, "data": args.data, "seconds": time.perf_counter() - t0,
                "load_average": os.getloadavg()[0], "versions": versions(), "argv": argv or __import__("sys").argv[1:]})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k not in ("versions",)}, indent=1)[:4000])
    return res


if __name__ == "__main__":
    main()
