"""Export a diffusion run's latest checkpoint (its EMA weights) as a model folder while the run
goes on, so a long run can be evaluated -- and a better model shipped -- before it ends.

    python scripts/export_checkpoint.py ~/.cache/blinkgen/runs/default-v2 --out /tmp/dv2-step8000 \
        [--ema 0.9995] [--styles "noto emoji,twemoji"]

Reads run/train_config.json (the preset and autoencoder) and run/checkpoints/latest; writes the
same folder format as the run's own export (fp16 weights, `arch`, styles and default style).
The loop's export needs the dataset to build its task; this needs only the checkpoint. A
`blinkgen distill` run is exported by its task's own writer (families/diffusion/distill.py).
"""
import argparse
import json
from pathlib import Path

from blinkgen.families.diffusion.folder import (DEFAULT_SETTINGS, find_autoencoder, load_autoencoder,
                                                save_diffusion_folder, trained_keys)
from blinkgen.modelio import read_tensors
from blinkgen.models.denoisers import from_preset
from blinkgen.precision import dtype_of
from blinkgen.train.checkpoint import latest_checkpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ema", default=None, help="an extra EMA length of the run (e.g. 0.9995); default: the main EMA")
    ap.add_argument("--styles", default="noto emoji,twemoji", help="styles the run trained with ('' for none)")
    a = ap.parse_args()
    run = Path(a.run).expanduser()
    cfg = json.loads((run / "train_config.json").read_text())
    if cfg.get("task") == "distill":  # a `blinkgen distill` run: its own folder config (step-size input, defaults)
        from blinkgen.families.diffusion.distill import export_checkpoint
        print(export_checkpoint(run, a.out, a.ema))
        return
    ck = latest_checkpoint(run)
    if ck is None:
        raise SystemExit(f"{run} has no checkpoint yet")
    state = json.loads((ck / "state.json").read_text())
    ae = load_autoencoder(find_autoencoder(cfg["autoencoder"]))
    f = ae.cfg.downsample
    net = from_preset(cfg["preset"], ae.cfg.latent_channels, cfg["size"] // f)
    name = f"ema.{a.ema}.safetensors" if a.ema else "ema.safetensors"
    net.load_state_dict(read_tensors(ck / name))
    styles = [s for s in a.styles.split(",") if s]
    extra = {**trained_keys(cfg.get("t_shift", 1.0), cfg.get("text_layers", 6)),  # sample as it trains
             "training": {"data": cfg["data"], "steps": state["step"], "batch_size": cfg["batch_size"],
                          "seed": cfg["seed"], "preset": cfg["preset"], "finished": state["step"] >= cfg["steps"],
                          "cpu_seconds": round(state.get("cpu_seconds", 0.0), 1), "checkpoint": ck.name,
                          "ema_decay": float(a.ema) if a.ema else cfg["ema_decay"]}}
    if styles:
        default = "twemoji" if "twemoji" in styles else styles[0]
        extra = {"styles": styles, "defaults": {**DEFAULT_SETTINGS, "style": default}, **extra}
    out = save_diffusion_folder(a.out, net.eval(), ae, extra, dtype=dtype_of(cfg.get("save_dtype", "fp32")))
    print(f"{ck.name} ({state.get('cpu_seconds', 0) / 3600:.2f} CPU-h) -> {out}")


if __name__ == "__main__":
    main()
