"""Does the frozen text encoder tell the image model WHICH object goes where? A linear probe on
MiniLM's token states, for the shapes grammar's relation captions ("a red circle left of a blue
square", the four relations).

For each caption and each of its two objects, the state of the object's colour word (its last
word piece) is labelled with where the object stands: for left of / right of, "is this object the
left one?"; for above / below, "is it the upper one?". A logistic-regression probe (full batch,
L2, fixed seed) learns on 2/3 of the captions and is scored on the rest, per layer: layer 0 is the
word-piece + position embedding (it cannot see the relation word, so it should sit at chance) and
layer 6 the states the denoisers attend to. Accuracy near 1 at layer 6 means the binding is in
the text states and a denoiser only has to read it; near 0.5, it would have to be computed.

    python bench/bench_text_binding.py --out bench/results/text_binding_probe.json
"""
import argparse
import json
import random
from pathlib import Path

import torch

from blinkgen.data.shapes import COLOURS, RELATIONS, SHAPES
from blinkgen.text.encoder import TextEncoder


def states(enc: TextEncoder, n: int, seed: int):
    """-> X (layers+1, 2n, 384) colour-token states, y (2n,) 1 = left/upper object, rel (2n,)."""
    rng = random.Random(seed)
    xs, ys, rels = [], [], []
    for _ in range(n):
        a, b = rng.sample(list(COLOURS), 2)
        sa, sb = rng.choice(SHAPES), rng.choice(SHAPES)
        rel = rng.choice(RELATIONS)
        words_a, words_b = f"a {a} {sa}", f"a {b} {sb}"
        tok = enc.tokenizer([f"{words_a} {rel} {words_b}"], return_tensors="pt")
        # position of each colour's last word piece: [CLS] + pieces of "a <colour>"
        ia = len(enc.tokenizer.tokenize(f"a {a}"))
        ib = len(enc.tokenizer.tokenize(f"{words_a} {rel} a {b}"))
        hs = enc.model(**tok, output_hidden_states=True).hidden_states  # layers+1 x (1, T, 384)
        first_wins = rel in ("left of", "above")  # "A left of B": A is the left one
        for i, label in ((ia, first_wins), (ib, not first_wins)):
            xs.append(torch.stack([h[0, i] for h in hs]))
            ys.append(float(label))
            rels.append(rel)
    return torch.stack(xs, 1), torch.tensor(ys), rels


def probe(x_tr, y_tr, x_te, y_te, steps: int = 500, l2: float = 1e-3) -> float:
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    w = torch.zeros(x_tr.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_tr @ w + b, y_tr) + l2 * w.square().sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return float(((x_te @ w + b > 0).float() == y_te).float().mean())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--captions", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    enc = TextEncoder()
    with torch.no_grad():
        X, y, rels = states(enc, a.captions, a.seed)
    cut = 2 * (2 * a.captions // 3)  # whole captions on each side
    acc = {f"layer_{k}": probe(X[k, :cut], y[:cut], X[k, cut:], y[cut:]) for k in range(X.shape[0])}
    out = {"what": "linear probe: does the colour word's MiniLM state tell whether its object is the left/upper one?",
           "captions": a.captions, "held_out_objects": int(len(y) - cut), "chance": float(max(y[cut:].mean(), 1 - y[cut:].mean())),
           "accuracy_by_layer": acc}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
