"""Can a cross-attention read-out learn WHERE each object goes from MiniLM's states, and how fast?

`bench_text_binding.py` shows the states carry it linearly (a probe per colour word). A denoiser
must do more: image positions (queries) attend over all the caption's tokens (keys) and take the
right colour (values). This bench trains only that read-out, with no noise and no image input:
64 learned position queries (an 8x8 grid), one 4-head cross-attention layer over the padded
states (keys and values linear), and an MLP to RGB. The target is the scene's render averaged to
8x8 (in [-1, 1]), the loss MSE, so the read-out learns E[image | caption] -- what a diffusion
network must predict at t = 1, where sampling starts. Data: two-object relation scenes of the
shapes grammar (distinct colours), each with one of its paraphrases, 6,000 to train and 300
held out.

Scored on the held-out captions every `--every` steps: the relation offset of the prediction
(`bench_relation.mean_offset`, pixels along the relation's axis at 64 px, > 0 = the right way)
and the share of captions where it points the right way (0.5 = blind to which object goes where).

    python bench/bench_binding_readout.py --layers 3 6 --steps 4000 --out bench/results/binding_readout.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_relation import draw_relation_scene, mean_offset  # noqa: E402

from blinkgen.data import shapes as S  # noqa: E402
from blinkgen.text.encoder import encode_cached  # noqa: E402

GRID = 8  # target and query grid: 8x8 cells of 8x8 pixels at 64 px


def scenes(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """n relation scenes (two single objects of different colours) -> targets (n, 3, 8, 8) float
    in [-1, 1] (the 64-px render averaged over 8x8 cells) and one paraphrase each."""
    rng = np.random.default_rng(seed)

    xs, caps = [], []
    for _ in range(n):
        sc = draw_relation_scene(rng)
        img = S.render(sc, 64, rng).astype(np.float32) / 127.5 - 1
        xs.append(img.reshape(GRID, 64 // GRID, GRID, 64 // GRID, 3).mean((1, 3)))
        caps.append(str(rng.choice(S.paraphrases(sc))))
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), caps


class ReadOut(nn.Module):
    """Learned grid queries -> cross-attention over text states (B, L, 384) -> RGB (B, 3, 8, 8)."""

    def __init__(self, width: int = 128, heads: int = 4):
        super().__init__()
        self.q = nn.Parameter(torch.randn(GRID * GRID, width) * 0.5)
        self.k, self.v = nn.Linear(384, width), nn.Linear(384, width)
        self.mlp = nn.Sequential(nn.Linear(width, 256), nn.GELU(), nn.Linear(256, 3))
        self.heads = heads

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, h = states.shape[0], self.heads

        def split(t):
            return t.view(B, t.shape[1], h, -1).transpose(1, 2)
        q = split(self.q[None].expand(B, -1, -1))
        o = F.scaled_dot_product_attention(q, split(self.k(states)), split(self.v(states)),
                                           attn_mask=mask[:, None, None, :])
        return self.mlp(o.transpose(1, 2).reshape(B, GRID * GRID, -1)).transpose(1, 2).reshape(B, 3, GRID, GRID)


def held_out_offsets(pred: torch.Tensor, captions: list[str]) -> np.ndarray:
    """pred (n, 3, 8, 8) in [-1, 1] -> relation offsets (n,) in pixels at 64 px."""
    imgs = ((pred.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255)
    up = np.ones((64 // GRID, 64 // GRID, 1))
    return np.array([mean_offset(np.kron(im, up), S.parse_caption(c)) for im, c in zip(imgs, captions)])


def run(layers: int, steps: int, every: int, lr: float, n_train: int = 6000, n_test: int = 300) -> dict:
    x_tr, c_tr = scenes(n_train, 1)
    x_te, c_te = scenes(n_test, 2)
    tb = encode_cached(c_tr + c_te, None, layers=layers)
    st, mk = tb.states.float(), tb.mask
    torch.manual_seed(0)
    net = ReadOut()
    opt = torch.optim.AdamW(net.parameters(), lr)
    g = torch.Generator().manual_seed(0)
    curve, t0 = [], time.process_time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n_train, (64,), generator=g)
        loss = F.mse_loss(net(st[idx], mk[idx]), x_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0:
            with torch.no_grad():
                off = held_out_offsets(net(st[n_train:], mk[n_train:]), c_te)
            curve.append({"step": step, "offset_px": float(off.mean()), "right_way": float((off > 0).mean())})
            print(json.dumps({"layers": layers, **curve[-1]}), flush=True)
    truth = held_out_offsets(x_te, c_te)
    return {"layers": layers, "steps": steps, "lr": lr, "curve": curve, "cpu_s": time.process_time() - t0,
            "targets_offset_px": float(truth.mean()), "targets_right_way": float((truth > 0).mean())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 6], help="MiniLM depths to read (1-6)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = {"runs": [run(k, a.steps, a.every, a.lr) for k in a.layers]}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
