"""The ceiling of the shapes score for a latent model: the checker on true renders of the 128
committed prompts, and on the same renders after a round trip through an autoencoder
(encode, then decode). A latent diffusion model cannot beat its autoencoder's round trip, so
this says how much of the 0.8 gate the latent space leaves.

    python bench/bench_shapes_ceiling.py --autoencoder src/blinkgen/weights/default/autoencoder --out <json>
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from blinkgen.data.shapes import SCENE_KINDS, parse_caption, render, scene_kind
from blinkgen.eval.shapes_check import check, score
from blinkgen.families.diffusion.folder import load_autoencoder
from blinkgen.models.autoencoder import to_pixels, to_uint8

KEYS = ("colour", "shape", "count", "size", "relation", "overall")
PROMPTS = Path(__file__).parent / "prompts" / "shapes_eval.txt"


def _summary(images, lines, kinds) -> dict:
    r = score(images, lines)
    hits = {k: [] for k in SCENE_KINDS}
    for img, line, kind in zip(images, lines, kinds):
        hits[kind].append(check(img, line).overall)
    return {**{k: r[k] for k in KEYS}, "overall_by_kind": {k: sum(v) / len(v) for k, v in hits.items() if v}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--autoencoder", default="src/blinkgen/weights/default/autoencoder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000], help="one render per prompt per seed")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    ae = load_autoencoder(a.autoencoder).eval()
    lines = [s.strip() for s in PROMPTS.read_text().splitlines() if s.strip()]
    kinds = [scene_kind(parse_caption(x)) for x in lines]
    out = {"autoencoder": a.autoencoder, "prompts": len(lines), "seeds": a.seeds, "renders": {}, "round_trip": {}}
    for s in a.seeds:
        renders = np.stack([render(parse_caption(x), a.size, np.random.default_rng([s, i])) for i, x in enumerate(lines)])
        with torch.no_grad():
            x = torch.from_numpy(renders).permute(0, 3, 1, 2)
            back = to_uint8(ae.decode(ae.encode(to_pixels(x)))).permute(0, 2, 3, 1).numpy()
        out["renders"][str(s)] = _summary(list(renders), lines, kinds)
        out["round_trip"][str(s)] = _summary(list(back), lines, kinds)
        print(s, "renders", round(out["renders"][str(s)]["overall"], 3), "round trip", round(out["round_trip"][str(s)]["overall"], 3), flush=True)
    for which in ("renders", "round_trip"):
        sets = list(out[which].values())
        out[which + "_mean"] = {k: sum(v[k] for v in sets) / len(sets) for k in KEYS}
        out[which + "_mean"]["overall_by_kind"] = {k: sum(v["overall_by_kind"][k] for v in sets) / len(sets)
                                                   for k in sets[0]["overall_by_kind"]}
    print(json.dumps({k: out[k] for k in ("renders_mean", "round_trip_mean")}, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
