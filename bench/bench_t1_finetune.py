"""Can a trained denoiser learn where each object goes once it is trained where sampling starts?

`bench_relation`'s mean prediction shows that no shapes model so far puts the objects of a
relation prompt the right way in its prediction from pure noise, E[image | prompt]: 0 px against
+27 px for the data. This bench separates "cannot" from "was not asked": it fine-tunes a trained
diffusion folder's denoiser on two-object relation scenes only, at training times drawn from
(t_from, 1] (the flow-matching loss of training; `--plain-share` keeps that share of each batch
at training's own times, so the network keeps what it does at lower noise), and reports the
mean prediction's offset (`bench_relation.mean_prediction` on the committed relation prompts'
versions, 4 seeds) every `--every` steps. A network that can read the binding from its text
states moves the offset toward the data's; one that cannot stays at 0.

Nothing is written but the JSON, unless `--save DIR` asks for the fine-tuned folder (to sample
it: `bench_relation --model DIR`). Data: 3,000 scenes at the model's size,
drawn as `bench_binding_readout.scenes` draws them (each with all its paraphrases).

    python bench/bench_t1_finetune.py --model <diffusion folder> --t-from 0.999 --lr 1e-3 --steps 600 \
        --out bench/results/<name>.json
"""
import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_relation import PROMPTS, applies, draw_relation_scene, mean_prediction  # noqa: E402

from blinkgen import load  # noqa: E402
from blinkgen.data import shapes as S  # noqa: E402
from blinkgen.models.autoencoder import to_pixels  # noqa: E402
from blinkgen.sampling.flow import draw_timesteps, interpolate, velocity_target  # noqa: E402
from blinkgen.text.encoder import encode_cached  # noqa: E402


def relation_scenes(n: int, size: int, seed: int = 123) -> tuple[torch.Tensor, list[list[str]]]:
    """n two-object relation scenes of distinct colours -> images (n, 3, size, size) uint8 and
    each scene's paraphrases."""
    rng = np.random.default_rng(seed)

    imgs, caps = [], []
    for _ in range(n):
        sc = draw_relation_scene(rng)
        imgs.append(S.render(sc, size, rng))
        caps.append(S.paraphrases(sc))
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(), caps


def eval_prompts() -> list[str]:
    """The committed relation prompts' four versions each (as bench_relation draws them)."""
    lines = [ln for ln in PROMPTS.read_text().splitlines() if ln.strip()]
    scenes = [s for s in map(S.parse_caption, lines) if s.relation]
    return sorted({S.describe(replace(sc, relation=r)) for sc in scenes for r in S.RELATIONS})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a diffusion folder (not a distilled student)")
    ap.add_argument("--t-from", type=float, default=0.999, help="training times from (t_from, 1]")
    ap.add_argument("--plain-share", type=float, default=0.0, help="share of each batch at training's own "
                    "logit-normal times instead (keeps what the network does at lower noise)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--scenes", type=int, default=3000)
    ap.add_argument("--eval-prompts", type=int, default=None, help="only the first N versions (default: all 128)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None, help="also write the fine-tuned model folder here (to sample it, "
                    "e.g. with bench_relation)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pipe = load(a.model)
    if not applies(pipe):
        raise SystemExit(f"{a.model}: not a plain diffusion model (its mean prediction is not E[image | prompt])")
    net, ae = pipe.dit, pipe.ae
    images, caps = relation_scenes(a.scenes, pipe.image_size)
    with torch.no_grad():
        latents = torch.cat([ae.encode(to_pixels(images[i:i + 256])) for i in range(0, len(images), 256)]).float()
    strings = sorted({c for cs in caps for c in cs})
    pos = {c: i for i, c in enumerate(strings)}
    tb = encode_cached(strings, None, layers=pipe.text.layers)
    states, mask, pooled = tb.states.float(), tb.mask, tb.pooled.float()
    cap_ids = [[pos[c] for c in cs] for cs in caps]
    prompts = eval_prompts()[:a.eval_prompts]
    torch.manual_seed(0)
    net.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), a.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    curve = [{"step": 0, **mean_prediction(pipe, prompts, 4)}]
    t0 = time.process_time()
    for step in range(1, a.steps + 1):
        net.train()
        idx = torch.randint(0, len(latents), (a.batch_size,), generator=g)
        pick = torch.rand(a.batch_size, generator=g)
        cid = torch.tensor([cap_ids[i][int(p * len(cap_ids[i]))] for i, p in zip(idx.tolist(), pick.tolist())])
        t = 1.0 - (1.0 - a.t_from) * torch.rand(a.batch_size, generator=g)
        if a.plain_share > 0:
            t = torch.where(torch.rand(a.batch_size, generator=g) < a.plain_share,
                            draw_timesteps(g, a.batch_size, pipe.shift), t)
        noise = torch.randn(latents[idx].shape, generator=g)
        v = net(interpolate(latents[idx], noise, t), t, states[cid], mask[cid], pooled[cid])
        loss = F.mse_loss(v.float(), velocity_target(latents[idx], noise))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0:
            net.eval()
            curve.append({"step": step, "loss": loss.item(), **mean_prediction(pipe, prompts, 4)})
            print(json.dumps(curve[-1]), flush=True)
    out = {"model": a.model, "t_from": a.t_from, "plain_share": a.plain_share, "lr": a.lr, "batch_size": a.batch_size, "scenes": a.scenes,
           "text_layers": pipe.text.layers, "cpu_s": time.process_time() - t0, "curve": curve}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    if a.save:
        from blinkgen.families.diffusion.folder import save_diffusion_folder

        keep = {k: v for k, v in pipe.config.items() if k not in ("family", "blinkgen_version", "arch", "dit", "image_size")}
        save_diffusion_folder(a.save, net.eval(), ae, {**keep, "t1_finetune": {k: out[k] for k in ("t_from", "plain_share", "lr", "batch_size", "scenes")}
                                                       | {"steps": a.steps, "from": a.model}})
    return out


if __name__ == "__main__":
    main()
