"""Is SDPA's math backend the same training step as torch's default CPU kernel (flash attention)?
One flow-matching step of a denoiser, in fp32 and in bf16 autocast, under each backend: the loss and
the parameter gradients' relative error against fp32 with the default kernel. Not a test.

    python bench/bench_sdpa_numerics.py --model ~/.cache/blinkgen/runs/shapes-p4-48k/model --threads 2 \
        --out bench/results/sdpa_numerics.json

A trained folder (--model) gives realistic activations; without it, --preset's random init (whose
zero-initialised output layer makes the loss independent of the kernel). Inputs are random latents
and MiniLM-shaped text states (32 positions, 18 real), as in bench_train_speed.py.
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from blinkgen.models.denoisers import from_preset
from blinkgen.outputs import write_text
from blinkgen.train.config import sdpa_context

SETTINGS = {"fp32+math": (False, True), "bf16+default": (True, False), "bf16+math": (True, True)}


def step_grads(dit, batch, amp: bool, math: bool) -> tuple[float, torch.Tensor]:
    xt, t, ctx, mask, pooled, target = batch
    dit.zero_grad(set_to_none=True)
    with sdpa_context("math" if math else "default"):  # the training loop's own wrapper
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            v = dit(xt, t, ctx, mask, pooled)
        loss = F.mse_loss(v.float(), target)
        loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in dit.parameters() if p.grad is not None])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a trained diffusion model folder (default: --preset at random init)")
    ap.add_argument("--preset", default="uvit-S-p4")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model:
        from blinkgen.families.diffusion.folder import load_diffusion_folder

        dit = load_diffusion_folder(a.model)[0].float()
    else:
        dit = from_preset(a.preset, 4, 16)
    c, s = dit.cfg.latent_channels, dit.cfg.latent_size
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(a.batch, c, s, s, generator=g), torch.randn(a.batch, c, s, s, generator=g)
    t = torch.rand(a.batch, generator=g)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    batch = (xt, t, torch.randn(a.batch, 32, 384, generator=g), torch.arange(32).expand(a.batch, 32) < 18,
             torch.randn(a.batch, 384, generator=g), noise - x0)
    ref_loss, ref = step_grads(dit, batch, False, False)
    rows = [{"setting": "fp32+default", "loss": ref_loss, "grad_rel_err_vs_fp32_default": 0.0}]
    for name, (amp, math) in SETTINGS.items():
        loss, gr = step_grads(dit, batch, amp, math)
        rows.append({"setting": name, "loss": loss, "grad_rel_err_vs_fp32_default": ((gr - ref).norm() / ref.norm()).item()})
        print(json.dumps(rows[-1]), flush=True)
    out = {"model": a.model, "preset": None if a.model else a.preset, "batch": a.batch, "torch": torch.__version__,
           "rows": rows, "command": "python bench/bench_sdpa_numerics.py "
           + (f"--model {a.model}" if a.model else f"--preset {a.preset}") + f" --batch {a.batch} --threads {a.threads} --out {a.out}"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(a.out), json.dumps(out, indent=1) + "\n", a.overwrite)
    return out


if __name__ == "__main__":
    main()
