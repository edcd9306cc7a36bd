"""Writes bench/prompts/shapes_eval.txt: 128 canonical captions of the shapes grammar drawn with
seed 2026 (the training sets use seed 0), one per line, distinct. Committed so that the shapes
compositional accuracy of every model is measured on the same prompts; re-run only to change them.
The grammar is small, so about half of these captions (65 of 128) also occur verbatim among the
captions of `shapes:1500`; the checker scores the generated pixels, never the caption, so this
tests following the grammar rather than recalling a training image (each run draws new seeds).

    python bench/prompts/make_shapes_eval.py
"""
from pathlib import Path

import numpy as np

from blinkgen.data.shapes import describe, sample_scene

N, SEED = 128, 2026

if __name__ == "__main__":
    rng = np.random.default_rng(SEED)
    out: list[str] = []
    while len(out) < N:
        c = describe(sample_scene(rng))
        if c not in out:
            out.append(c)
    path = Path(__file__).with_name("shapes_eval.txt")
    path.write_text("\n".join(out) + "\n")
    print(f"wrote {len(out)} prompts to {path}")
