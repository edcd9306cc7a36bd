"""Probe (issue 17's R@1 gate): fine-tune the shipped autoencoder's decoder with L1 + MSE + a
PatchGAN hinge loss, the encoder frozen so that the latent space and the denoiser stay valid.
The adversarial weight is VQGAN's adaptive one (Esser et al. 2021, "Taming Transformers", eq. 7:
||grad rec|| / ||grad adv|| at the decoder's last conv, times --adv). Writes model folders (the
default generator + the fine-tuned autoencoder) at --out and --out-<step> every 200 steps, to
score with bench_r1_ceiling.py and bench_r1_seeds.py. A probe, not a command: it did not help
(bench/RESULTS.md, "The R@1 gate's bar against the autoencoder's own round trip").

    python bench/probe_decoder_gan.py --steps 801 --g-start 100 --adv 0.8 --out ~/.cache/blinkgen/dec/gan8
"""
import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import blinkgen
from blinkgen.data.registry import load_dataset
from blinkgen.eval.contrastive import held_out_split
from blinkgen.models.autoencoder import AutoencoderConfig, AutoencoderKL, psnr, to_pixels, to_uint8

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=2000)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--adv", type=float, default=0.1)
ap.add_argument("--d-start", type=int, default=0)
ap.add_argument("--g-start", type=int, default=300)
ap.add_argument("--out", required=True)
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

src = Path(blinkgen.__file__).parent / "weights" / "default"
cfgd = json.loads((src / "autoencoder/config.json").read_text())
ae = AutoencoderKL(AutoencoderConfig(**{k: v for k, v in cfgd.items() if k != "family"}))
ae.load_state_dict(load_file(src / "autoencoder/model.safetensors"))
ae.encoder.requires_grad_(False).eval()

data = load_dataset("emoji+shapes:3000", 64, 0)
train, held = held_out_split(data, 0)
X = train.images  # uint8 (N,3,64,64)
H = held.images
print("train", X.shape, "held", H.shape, flush=True)

with torch.no_grad():
    mom = [ae.moments(to_pixels(X[i:i + 256])) for i in range(0, len(X), 256)]
    MEAN = torch.cat([m[0] for m in mom]); STD = torch.cat([(0.5 * m[1]).exp() for m in mom])
    hm = ae.moments(to_pixels(H))[0]
print("latents cached", MEAN.shape, "std mean", STD.mean().item(), flush=True)


def held_psnr():
    with torch.no_grad():
        return psnr(to_uint8(ae.decoder(hm)), H)


class PatchD(nn.Module):
    def __init__(self, w=64):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, w, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * w, 2 * w, 3, 1, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * w, 1, 3, 1, 1)))

    def forward(self, x):
        return self.net(x)


def save(tag=""):
    out = Path(a.out + tag)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, str(out / "autoencoder/model.safetensors"))
    (out / "probe_log.json").write_text(json.dumps({"args": vars(a), "log": log}, indent=1))
    print("saved", out, flush=True)


D = PatchD()
dec = ae.decoder
optG = torch.optim.Adam(dec.parameters(), lr=a.lr * 0.5, betas=(0.5, 0.9))
optD = torch.optim.Adam(D.parameters(), lr=a.lr, betas=(0.5, 0.9))
last = dec.net[-2].weight  # the conv before PixelShuffle
print("held psnr start", round(held_psnr(), 3), flush=True)
log = []
t0 = time.time()
g = torch.Generator().manual_seed(1)
for step in range(a.steps):
    ix = torch.randint(0, len(X), (a.batch,), generator=g)
    x = to_pixels(X[ix])
    # no augmentation: a flip changes an emoji's handedness
    z = MEAN[ix] + torch.randn(MEAN[ix].shape, generator=g) * STD[ix]
    rec = dec(z)
    l1 = (rec - x).abs().mean(); mse = F.mse_loss(rec, x)
    lrec = l1 + mse
    lam = torch.tensor(0.0)
    if step >= a.g_start:
        ladv = -D(rec).mean()
        gr = torch.autograd.grad(lrec, last, retain_graph=True)[0].norm()
        ga = torch.autograd.grad(ladv, last, retain_graph=True)[0].norm()
        lam = (gr / (ga + 1e-4)).clamp(0, 1e4).detach() * a.adv
        loss = lrec + lam * ladv
    else:
        loss = lrec
    optG.zero_grad(set_to_none=True); loss.backward(); optG.step()
    if step >= a.d_start:
        dr = D(x); df = D(rec.detach())
        ld = F.relu(1 - dr).mean() + F.relu(1 + df).mean()
        optD.zero_grad(set_to_none=True); ld.backward(); optD.step()
    if step % 100 == 0 or step == a.steps - 1:
        hp = held_psnr()
        row = {"step": step, "l1": l1.item(), "mse": mse.item(), "lam": float(lam), "ld": ld.item(),
               "held_psnr": hp, "s": time.time() - t0}
        if step and step % 200 == 0:
            save(f'-{step}')
        log.append(row); print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

save()
