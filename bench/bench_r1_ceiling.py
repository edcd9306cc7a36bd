"""The R@1 a latent model can reach: the evaluator's R@1 of the real held-out images, and of the
same images after a round trip through the autoencoder (encode, decode), split by source as
`bench_r1_by_source.py` splits it. A latent diffusion model draws through that decoder, so the
round trip's R@1 is the ceiling its generated images meet, where the real images' R@1 is the
bar issue 17's gate sets.

    python bench/bench_r1_ceiling.py [--model default] --out bench/results/r1_autoencoder_ceiling.json

Two protocols, both `blinkgen eval`'s: "all_heldout", each held-out image's primary caption
ranked among the distinct primary captions of the whole held-out split (the report's ceiling);
"same_prompts", the held-out images of the run's --samples prompts ranked among the run's distinct
prompts (real_R@1_same_prompts: the bar of the R@1 gate, 0.756 for the default's spec).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from blinkgen import load
from blinkgen.eval.contrastive import retrieval_hits
from blinkgen.eval.evaluate import build_reference, run_prompts

sys.path.insert(0, str(Path(__file__).parent))
from bench_r1_by_source import table  # noqa: E402  (the same split by source)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="emoji+shapes:3000")
    ap.add_argument("--model", default="default", help="whose decoder (Pipeline.round_trip)")
    ap.add_argument("--samples", type=int, default=128, help="the run's prompts, as bench_default/blinkgen eval")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pipe = load(a.model)
    ref = build_reference(a.data, pipe.image_size)
    own = ref.own
    uniq = sorted(set(own))
    txt = ref.evaluator.embed_texts(uniq)
    rows = {"real": ref.real_emb, "autoencoder_round_trip": ref.evaluator.embed_images(pipe.round_trip(ref.held_images))}
    out = {"data": a.data, "model": a.model, "n": len(own), "distinct_captions": len(uniq)}
    asked = sorted(set(run_prompts(ref, a.samples, 0)[0]))
    same = [i for i, c in enumerate(own) if c in set(asked)]
    txt_same = ref.evaluator.embed_texts(asked)
    for name, emb in rows.items():
        out[name] = {}
        for proto, (ix, t, cands) in {"all_heldout": (list(range(len(own))), txt, uniq),
                                      "same_prompts": (same, txt_same, asked)}.items():
            hits = retrieval_hits(emb[ix], t, [cands.index(own[i]) for i in ix], 1).tolist()
            out[name][proto] = {"n": len(ix), "candidates": len(cands), "R@1": sum(hits) / len(hits),
                                "by_source": table([(own[i], h) for i, h in zip(ix, hits)])}
            print(name, proto, round(out[name][proto]["R@1"], 3),
                  json.dumps({k: (v["n"], round(v["R@1"], 3)) for k, v in out[name][proto]["by_source"].items()}))
    Path(a.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
