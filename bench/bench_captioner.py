"""The generative captioner against held-out images (issue 13):

- shapes: N fresh scenes (a seed the training never used); the written caption must parse with the
  shapes grammar and describe the same scene as the true caption (mirrored relations count as the
  same); per-attribute accuracy through the grammar's parser (eval/caption_metrics.py), and exact
  string equality;
- emoji: the emoji images the training run held out (the one loop's split of its data spec and
  seed); right = the written caption is the emoji's CLDR name or one of its captions (case and
  spacing ignored), against retrieval (`blinkgen caption`, the shipped candidates) on the same images.

    python bench/bench_captioner.py --out bench/results/captioner.json [--captioner DIR] [--beams 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from blinkgen.data.registry import load_dataset
from blinkgen.data.shapes import make_shapes
from blinkgen.eval.caption import caption_batch
from blinkgen.eval.caption_metrics import scene_agreement, summarise
from blinkgen.eval.captioner import load_captioner
from blinkgen.eval.contrastive import held_out_split
from blinkgen.eval.evaluate import versions
from blinkgen.outputs import parse_args_with_out, write_text

SHAPES_SEED = 424242  # no training run uses it: these scenes are new


def norm(s: str) -> str:
    return " ".join(s.lower().split())


def shapes_report(writer, n: int, beams: int) -> dict:
    data = make_shapes(n, seed=SHAPES_SEED, size=writer.evaluator.image_size)
    truth = [c[0] for c in data.captions]
    t0 = time.perf_counter()
    written = writer.write(data.images, beams=beams)
    dt = time.perf_counter() - t0
    rows = [scene_agreement(w, t) for w, t in zip(written, truth)]
    return {"n": n, "seed": SHAPES_SEED, **summarise(rows),
            "exact_string": sum(norm(w) == norm(t) for w, t in zip(written, truth)) / n,
            "seconds": round(dt, 2), "images_per_s": round(n / dt, 1),
            "examples": [{"truth": t, "written": w} for t, w in list(zip(truth, written))[:12]],
            "errors": [{"truth": t, "written": w} for t, w, r in zip(truth, written, rows) if not r["same"]][:20]}


def emoji_report(writer, spec: str, seed: int, beams: int) -> dict:
    data = load_dataset(spec, writer.evaluator.image_size, seed)
    held = held_out_split(data, seed)[1]
    keep = [i for i, n in enumerate(held.names) if not n.startswith("shapes-")]
    held = held.subset(keep)
    written = writer.write(held.images, beams=beams)
    ok = [norm(w) in {norm(c) for c in caps} for w, caps in zip(written, held.captions)]
    ret = caption_batch(list(held.images.permute(0, 2, 3, 1).numpy()), top_k=1)
    ok_ret = [norm(r[0][0]) in {norm(c) for c in caps} for r, caps in zip(ret, held.captions)]
    return {"n": len(held), "data": spec, "split_seed": seed, "generated_right": sum(ok) / len(held),
            "retrieval_right": sum(ok_ret) / len(held),
            "examples": [{"name": caps[0], "written": w, "retrieved": r[0][0]}
                         for caps, w, r in list(zip(held.captions, written, ret))[:16]]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captioner", default=None, help="captioner folder (default: the shipped one)")
    ap.add_argument("--shapes", type=int, default=500, help="fresh shapes scenes to caption")
    ap.add_argument("--emoji-data", default=None, help="data spec whose held-out emoji are scored "
                    "(default: the captioner's training data)")
    ap.add_argument("--beams", type=int, default=None, help="beam width (default: the captioner's)")
    ap.add_argument("--out", required=True)
    a = parse_args_with_out(ap, argv)  # an existing --out is refused before any work, in one line
    torch.set_num_threads(1)
    writer = load_captioner(a.captioner)
    tr = writer.config.get("training", {})
    beams = a.beams or writer.config.get("decode", {}).get("beams", 3)
    out = {"captioner": str(writer.folder), "training": tr, "beams": beams,
           "size_bytes": (Path(writer.folder) / "model.safetensors").stat().st_size,
           "shapes": shapes_report(writer, a.shapes, beams)}
    spec = a.emoji_data or tr.get("data")
    if spec and "emoji" in spec:
        out["emoji"] = emoji_report(writer, spec, int(tr.get("seed", 0)), beams)
    out["command"] = "python bench/bench_captioner.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out["versions"] = versions()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(a.out), json.dumps(out, indent=2), a.overwrite)
    s = out["shapes"]
    print(json.dumps({"shapes_same": s["same"], "shapes_parses": s["parses"],
                      **{k: s[k] for k in ("colour", "shape", "count", "size", "relation", "background")},
                      **({k: out["emoji"][k] for k in ("n", "generated_right", "retrieval_right")} if "emoji" in out else {})}))


if __name__ == "__main__":
    main()
