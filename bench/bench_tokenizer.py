"""Image tokenizer quality (not a test): how much of an image survives the trip to tokens and back.

For each FSQ tokenizer (a tokenizer folder, tokenizer run or AR model folder) on the held-out
images of --data (the training loop's own split, so a tokenizer trained on that spec never saw
them):
  - reconstruction PSNR (dB, over all pixels);
  - FD of reconstructions: Frechet distance between the evaluator's embeddings of the
    reconstructions and of the real images, next to the floor between two halves of the real set
    (FD of the same images is 0; two independent halves of real images are not);
  - codebook usage (share of codes used on the held-out set) and perplexity of the code
    histogram (exp entropy; the codebook size if all codes were equally used);
  - alignment of the reconstructions with their own captions vs the real images' (how much of what
    the evaluator reads survives).
Optionally the diffusion family's continuous KL autoencoder (--autoencoder: a diffusion model
name or folder) on the same images, for context: what continuous latents keep.

    python bench/bench_tokenizer.py --tokenizer runs/ar-emoji/tok/model --autoencoder default \
        --data datasets/emoji+shapes:1500 --out bench/results/tokenizer.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from blinkgen.eval import metrics as M
from blinkgen.eval.contrastive import held_out_split, load_evaluator
from blinkgen.eval.evaluate import blas_threads, versions
from blinkgen.models.autoencoder import psnr, to_pixels, to_uint8
from blinkgen.outputs import parse_args_with_out, write_text


def _batched(fn, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    return torch.cat([fn(images[i:i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def tokenizer_row(tok, real: torch.Tensor) -> tuple[dict, torch.Tensor]:
    idx = _batched(tok.encode_uint8, real)  # (R, n_tokens)
    rec = _batched(lambda i: to_uint8(tok.decode(i).float()).cpu(), idx)  # (R, 3, H, W) uint8
    counts = torch.bincount(idx.flatten(), minlength=tok.codebook_size).double()
    p = counts / counts.sum()
    ent = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {"kind": "fsq", "config": tok.cfg.to_dict(), "tokens_per_image": tok.n_tokens,
            "codebook_size": tok.codebook_size, "psnr_db": psnr(rec, real),
            "codebook_usage": tok.codebook_usage(idx), "code_perplexity": math.exp(ent),
            "bits_per_image": tok.n_tokens * math.log2(tok.codebook_size)}, rec


@torch.no_grad()
def autoencoder_row(ae, real: torch.Tensor) -> tuple[dict, torch.Tensor]:
    p = next(ae.parameters())
    rec = _batched(lambda x: to_uint8(ae.decode(ae.encode(to_pixels(x).to(p.dtype))).float()).cpu(), real)
    return {"kind": "kl-autoencoder (continuous latents)", "config": ae.cfg.to_dict(),
            "psnr_db": psnr(rec, real)}, rec


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--tokenizer", nargs="+", required=True, help="tokenizer / tokenizer run / AR model folders")
    ap.add_argument("--autoencoder", default=None, help="diffusion model (name or folder) whose KL autoencoder to add")
    ap.add_argument("--data", default="datasets/emoji+shapes:1500")
    ap.add_argument("--seed", type=int, default=0, help="split seed (the training loop's)")
    ap.add_argument("--evaluator", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = parse_args_with_out(ap, argv)  # an existing --out: refused now, exit 2
    torch.set_num_threads(args.threads)
    from blinkgen.families.ar.folder import find_tokenizer, load_tokenizer
    from blinkgen.data.registry import load_dataset

    t0 = time.perf_counter()
    ev = load_evaluator(args.evaluator)
    cands = [load_tokenizer(find_tokenizer(t)) for t in args.tokenizer]
    size = cands[0].cfg.image_size
    held = held_out_split(load_dataset(args.data, size, args.seed), args.seed)[1]
    real = held.images  # (R, 3, H, W) uint8
    own = [c[0] for c in held.captions]
    real_emb, txt = ev.embed_images(real), ev.embed_texts(own)
    with blas_threads():
        floor = M.frechet_distance(real_emb[0::2], real_emb[1::2])
    real_align = M.alignment(real_emb, txt)
    rows, recs = [], []
    for name, tok in zip(args.tokenizer, cands):
        row, rec = tokenizer_row(tok, real)
        rows.append({"name": name, **row})
        recs.append(rec)
    if args.autoencoder:
        from blinkgen.api import load

        gen = load(args.autoencoder)
        if gen.image_size != size:
            ap.error(f"{args.autoencoder} makes {gen.image_size}px images, the tokenizers {size}px")
        row, rec = autoencoder_row(gen.ae, real)
        rows.append({"name": f"{args.autoencoder} (autoencoder)", **row})
        recs.append(rec)
    for r, rec in zip(rows, recs):
        emb = ev.embed_images(rec)
        with blas_threads():
            r["fd_recon_vs_real"] = M.frechet_distance(emb, real_emb)
        r["alignment_recon"] = M.alignment(emb, txt)
    result = {"what": "image tokenizer reconstruction quality on held-out images",
              "command": "python bench/bench_tokenizer.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "data": args.data, "n_images": len(real), "image_size": size,
              "real_fd_between_halves": floor, "real_alignment": real_align,
              "evaluator": {"path": str(ev.folder), "sha256": ev.weights_sha256()},
              "versions": versions(), "rows": rows, "wall_s": time.perf_counter() - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2), args.overwrite)
    print(render(result), end="")
    return result


def render(r: dict) -> str:
    lines = [f"{r['n_images']} held-out {r['image_size']}px images of `{r['data']}`; FD floor between two real "
             f"halves {r['real_fd_between_halves']:.3f}; real alignment {r['real_alignment']:.3f}.", "",
             "| tokenizer | tokens x codebook | PSNR dB | FD recon vs real | align recon | codebook usage | code perplexity |",
             "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        tk = f"{x['tokens_per_image']} x {x['codebook_size']}" if x["kind"] == "fsq" else "continuous"
        use = f"{x['codebook_usage']:.0%}" if "codebook_usage" in x else ""
        ppl = f"{x['code_perplexity']:.1f}" if "code_perplexity" in x else ""
        lines.append(f"| {x['name']} | {tk} | {x['psnr_db']:.2f} | {x['fd_recon_vs_real']:.3f} | "
                     f"{x['alignment_recon']:.3f} | {use} | {ppl} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
