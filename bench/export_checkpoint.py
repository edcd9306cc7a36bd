"""Export the EMA weights of one training checkpoint of a GAN or VAE run as a model folder (not a
test): for comparisons at equal training CPU between runs (each checkpoint's state.json records
the CPU seconds spent so far), e.g. pixel against latent space.

    python bench/export_checkpoint.py --run runs/gan-S --cpu-seconds 900 --out runs/gan-S-900/model

Picks the last checkpoint whose CPU seconds are <= --cpu-seconds (or exactly --step), rebuilds
the network from the run's train_config.json (family, preset, size, autoencoder) and writes the
folder with the family's own writer. styles/default style: as the run's export would record them
for the emoji data (--styles, --style).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from blinkgen.families.diffusion.folder import find_autoencoder, load_autoencoder
from blinkgen.families.onepass import ImageSpace
from blinkgen.modelio import load_into, read_tensors


def pick(run: Path, cpu_seconds: float | None, step: int | None) -> tuple[Path, dict]:
    cks = []
    for ck in sorted((run / "checkpoints").glob("step-*")):
        st = json.loads((ck / "state.json").read_text())
        cks.append((ck, st))
    if step is not None:
        return next((c, s) for c, s in cks if s["step"] == step)
    ok = [(c, s) for c, s in cks if s.get("cpu_seconds", 0) <= cpu_seconds]
    if not ok:
        raise SystemExit(f"no checkpoint of {run} within {cpu_seconds} CPU seconds")
    return ok[-1]


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--cpu-seconds", type=float, default=None)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--styles", default="noto emoji,twemoji")
    ap.add_argument("--style", default="twemoji")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if (args.cpu_seconds is None) == (args.step is None):
        ap.error("give exactly one of --cpu-seconds and --step")
    run = Path(args.run)
    cfg = json.loads((run / "train_config.json").read_text())
    ck, st = pick(run, args.cpu_seconds, args.step)
    fam = cfg["family"]
    if fam == "gan":
        from blinkgen.families.gan.folder import DEFAULTS, PRESETS, generator_config, save_gan_folder
        from blinkgen.models.gan import Generator
    else:
        from blinkgen.families.vae.folder import DEFAULTS, PRESETS, cvae_config, save_vae_folder
        from blinkgen.models.cvae import TextConditionalVAE
    preset = PRESETS[cfg["preset"]]
    ae = load_autoencoder(find_autoencoder(cfg["autoencoder"])) if preset["space"] == "latent" else None
    space = ImageSpace(cfg["size"], ae)
    ema = read_tensors(ck / "ema.safetensors")
    extra = {"styles": [s for s in args.styles.split(",") if s], "defaults": {**DEFAULTS, "style": args.style},
             "preset": cfg["preset"], "training": {"data": cfg["data"], "steps": st["step"], "checkpoint": str(ck),
                                                   "cpu_seconds": st.get("cpu_seconds"), "finished": False}}
    if fam == "gan":
        net = Generator(generator_config(preset, space))
        load_into(net, {k[len("generator."):]: v for k, v in ema.items() if k.startswith("generator.")}, str(ck))
        out = save_gan_folder(args.out, net, space, extra, dtype=torch.float16)  # as the runs export
    else:
        net = TextConditionalVAE(cvae_config(preset, space))
        load_into(net, ema, str(ck))
        out = save_vae_folder(args.out, net, space, extra, dtype=torch.float16)
    print(f"{out} <- {ck.name} ({st.get('cpu_seconds', 0):.0f} CPU s)")
    return out


if __name__ == "__main__":
    main()
