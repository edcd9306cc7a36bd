"""Train the embedded default model in a fixed wall-clock budget (used on a lent GPU).

Each stage runs `blinkgen.train.loop.train` -- the same code `blinkgen train` runs -- after a
short calibration run that measures images/s, so the cosine schedule is sized to end inside the
budget instead of being cut off. Results are copied to OUT as they are made, so a failure late
in the job still returns the stages that finished. The equivalent CLI commands are written to
OUT/meta.json.
"""
import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from safetensors.torch import load_file, save_file

from blinkgen.train.config import TrainConfig
from blinkgen.train.loop import train


def calibrated(cfg: TrainConfig, budget_s: float, calib_steps: int, data) -> tuple[Path, dict]:
    calib = replace(cfg, out=cfg.out + "-calib", steps=calib_steps, eval_every=0, sample_every=0, ckpt_every=0,
                    warmup=min(cfg.warmup, calib_steps))
    train(calib, data=data)
    ips = json.loads((Path(calib.out) / "train_stats.json").read_text())["images_per_s"]
    steps = max(50, int(budget_s * ips / cfg.batch_size))
    real = replace(cfg, steps=steps, time_limit=budget_s * 1.2, warmup=min(cfg.warmup, steps // 10))
    t = time.time()
    out = train(real, data=data)
    stats = json.loads((Path(cfg.out) / "train_stats.json").read_text())
    stats.update(calibration_images_per_s=ips, planned_steps=steps, wall_s=time.time() - t,
                 command=cli_command(real))
    return out, stats


def cli_command(cfg: TrainConfig) -> str:
    d = TrainConfig().to_dict()
    args = [f"--{k.replace('_', '-')} {v}" for k, v in cfg.to_dict().items()
            if v != d[k] and k not in ("sample_prompts", "time_limit")]
    return "blinkgen train " + " ".join(args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="datasets/emoji+shapes:4000")
    ap.add_argument("--run", default="/tmp/blinkgen-default")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ae-preset", default="S")
    ap.add_argument("--preset", default="M")
    ap.add_argument("--ae-budget", type=float, default=80)
    ap.add_argument("--dit-budget", type=float, default=330)
    ap.add_argument("--ae-batch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--calib-steps", type=int, default=60)
    ap.add_argument("--mixed-precision", default="bf16")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.9995)
    ap.add_argument("--warmup", type=int, default=500)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {}
    from blinkgen.data.registry import load_dataset
    t0 = time.time()
    data = load_dataset(a.data, 64, 0)  # loaded once for all four runs
    meta["data"] = {"spec": a.data, "images": len(data), "load_s": round(time.time() - t0, 1)}
    print(meta["data"], flush=True)
    common = dict(data=a.data, size=64, mixed_precision=a.mixed_precision, seed=0, log_every=100)
    ae_cfg = TrainConfig(family="autoencoder", out=f"{a.run}/ae", preset=a.ae_preset, batch_size=a.ae_batch,
                         lr=5e-4, warmup=200, ema_decay=0.999, eval_every=1000, sample_every=0,
                         ckpt_every=2000, save_dtype="fp16", **common)
    ae_dir, meta["autoencoder"] = calibrated(ae_cfg, a.ae_budget, a.calib_steps, data)
    meta["autoencoder"]["config"] = json.loads((ae_dir / "config.json").read_text())
    meta["autoencoder"]["val"] = (Path(ae_cfg.out) / "val_history.jsonl").read_text()
    shutil.copy(ae_dir / "model.safetensors", out / "autoencoder.safetensors")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))

    dit_cfg = TrainConfig(family="diffusion", out=f"{a.run}/dit", preset=a.preset, batch_size=a.batch,
                          lr=a.lr, warmup=a.warmup, ema_decay=a.ema, caption_dropout=0.1, eval_every=1000,
                          sample_every=4000, ckpt_every=2000, autoencoder=str(ae_dir), save_dtype="fp16", **common)
    dit_dir, meta["diffusion"] = calibrated(dit_cfg, a.dit_budget, a.calib_steps, data)
    meta["diffusion"]["config"] = json.loads((dit_dir / "config.json").read_text())
    meta["diffusion"]["val"] = (Path(dit_cfg.out) / "val_history.jsonl").read_text()
    sd = load_file(str(dit_dir / "model.safetensors"))
    keys = sorted(sd)
    half = len(keys) // 2  # two shards: one returned file may hold at most 16 MiB
    save_file({k: sd[k] for k in keys[:half]}, str(out / "model_part0.safetensors"))
    save_file({k: sd[k] for k in keys[half:]}, str(out / "model_part1.safetensors"))
    samples = sorted((Path(dit_cfg.out) / "samples").glob("*.png"))
    if samples:
        shutil.copy(samples[-1], out / "samples.png")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print("done", json.dumps({k: {x: meta[k].get(x) for x in ("images_per_s", "final_step", "seconds")} for k in meta}))


if __name__ == "__main__":
    main()
