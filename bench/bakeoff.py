"""Architecture bake-off for the default model at equal CPU-minutes (issue: a default model people
recognise). Three steps, each a subcommand:

    python bench/bakeoff.py subset --out ~/.cache/blinkgen/datasets/bakeoff200
    python bench/bakeoff.py run --preset S --data ~/.cache/blinkgen/datasets/bakeoff200+shapes:600 \
        --out ~/.cache/blinkgen/runs/bakeoff/S --minutes 10,20,40 --threads 1
    python bench/bakeoff.py eval --runs ~/.cache/blinkgen/runs/bakeoff --out bench/results/bakeoff.json

`subset`: 200 base emoji x 2 styles (the grid prompts' emoji first, then a seeded draw of the rest;
skin-tone variants only where a grid prompt names one), as a folder dataset.
`run`: trains one candidate with the shared recipe and exports the EMA model at each CPU-minute
mark (CPU time of the training steps, all threads, so a loaded machine does not favour anyone).
`eval`: for every exported model, the nearest-neighbour recognisability check on the 52 emoji-name
grid prompts (each style), alignment/R@1/FD on the 54 grid emoji prompts, and the compositional
accuracy on the 128 committed shapes prompts.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "bench" / "prompts" / "default_grid.txt"
SHAPES_PROMPTS = REPO / "bench" / "prompts" / "shapes_eval.txt"
EMOJI = Path.home() / ".cache" / "blinkgen" / "datasets" / "emoji"
N_NAMES = 52  # the grid's first 52 lines are plain emoji names (the check)
STYLES = ("twemoji", "noto emoji")
RECIPE = ["--batch-size", "64", "--lr", "5e-4", "--warmup", "100", "--min-lr-ratio", "1.0", "--ema-decay", "0.995",
          "--order", "group", "--mix", "0.7,0.3", "--style-prob", "0.8", "--augment", "mirror",
          "--eval-every", "0", "--sample-every", "0", "--ckpt-every", "200", "--log-every", "50", "--save-dtype", "fp16"]


def grid_prompts() -> list[str]:
    return [l.strip() for l in GRID.read_text().splitlines() if l.strip()]


def cmd_subset(a):
    rows = [json.loads(l) for l in (EMOJI / "metadata.jsonl").read_text().splitlines()]
    named = {p.lower() for p in grid_prompts()[:54]}
    want_groups = [r["group"] for r in rows if any(c.lower() in named for c in r["captions"])]
    want_groups = list(dict.fromkeys(want_groups))
    rest = sorted({r["group"] for r in rows} - set(want_groups))
    random.Random(0).shuffle(rest)
    chosen = set(want_groups + rest[: a.groups - len(want_groups)])
    tone = lambda r: any(k in r["unified"] for k in ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"))
    keep = [r for r in rows if r["group"] in chosen and (not tone(r) or any(c.lower() in named for c in r["captions"]))]
    out = Path(a.out).expanduser()
    if out.exists():
        shutil.rmtree(out)
    for r in keep:
        (out / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EMOJI / r["file_name"], out / r["file_name"])
    (out / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    print(f"{len(keep)} images in {len(chosen)} groups ({len(want_groups)} named by grid prompts) -> {out}")


def cmd_run(a):
    out = Path(a.out).expanduser()
    cli = [sys.executable, "-m", "blinkgen.cli", "train", "--family", "diffusion", "--data", a.data,
           "--preset", a.preset, "--autoencoder", a.autoencoder, "--out", str(out), "--steps", "1000000",
           "--threads", str(a.threads), *RECIPE]
    log = open(out.parent / f"{out.name}.log", "a") if out.parent.exists() else None
    for k, minutes in enumerate(int(m) for m in a.minutes.split(",")):
        dest = out / f"model-{minutes:03d}cpumin"
        if dest.exists():
            continue
        cmd = cli + ["--cpu-limit", str(minutes * 60)] + (["--resume"] if (out / "checkpoints").exists() else [])
        t = time.time()
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT if log else None)
        if r.returncode != 0:
            sys.exit(f"training failed ({r.returncode}): {' '.join(cmd)}")
        stats = json.loads((out / "train_stats.json").read_text())
        shutil.copytree(out / "model", dest)
        (dest / "bakeoff.json").write_text(json.dumps({"cpu_minutes": minutes, "wall_s": time.time() - t, **stats}, indent=1))
        print(f"{a.preset}: {minutes} CPU-min at step {stats['final_step']} -> {dest}", flush=True)


def evaluate_model(folder: Path, threads: int) -> dict:
    import torch

    import blinkgen
    from blinkgen.data.folder import load_folder
    from blinkgen.eval.evaluate import evaluate
    from blinkgen.eval.recognise import nearest_neighbour_hits

    torch.set_num_threads(threads)
    gen = blinkgen.load(str(folder))
    names = grid_prompts()[:N_NAMES]
    ref = load_folder(EMOJI, 64)
    out = {"model": str(folder)}
    for style in STYLES:
        ims = gen.generate([f"{p} in {style} style" for p in names], seed=0, style="none")
        r = nearest_neighbour_hits(ims, names, ref)
        out[f"nn_hits_{style}"] = r["hits"]
        out[f"nn_detail_{style}"] = [(x["prompt"], x["rank"]) for x in r["per_prompt"]]
    tmp = folder / "bakeoff_prompts.txt"
    tmp.write_text("".join(f"{p} in twemoji style\n" for p in grid_prompts()[:54]))
    m = evaluate(gen, "emoji", samples=54, prompts=str(tmp), style="none")["metrics"]
    out.update({k: m.get(k) for k in ("fd", "alignment", "retrieval_R@1", "retrieval_R@5")})
    s = evaluate(gen, "shapes:1500", samples=128, prompts=str(SHAPES_PROMPTS), style="none")["metrics"]["shapes"]
    out["shapes"] = {k: s[k] for k in ("colour", "shape", "count", "size", "relation", "overall")}
    return out


def cmd_eval(a):
    rows = []
    path = Path(a.out)
    done = {r["model"]: r for r in json.loads(path.read_text())["rows"]} if path.is_file() else {}
    for folder in sorted(Path(a.runs).expanduser().glob("*/model-*cpumin")):
        if str(folder) in done:
            rows.append(done[str(folder)])
            continue
        r = {"candidate": folder.parent.name, **json.loads((folder / "bakeoff.json").read_text()),
             **evaluate_model(folder, a.threads)}
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if "detail" not in k and k not in ("rounds",)}), flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"command": " ".join(sys.argv), "recipe": RECIPE, "rows": rows}, indent=1) + "\n")
    path.write_text(json.dumps({"command": " ".join(sys.argv), "recipe": RECIPE, "rows": rows}, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("subset")
    p.add_argument("--out", required=True)
    p.add_argument("--groups", type=int, default=200)
    p.set_defaults(func=cmd_subset)
    p = sub.add_parser("run")
    p.add_argument("--preset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--autoencoder", default=str(REPO / "src" / "blinkgen" / "weights" / "default" / "autoencoder"))
    p.add_argument("--minutes", default="10,20,40")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("eval")
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_eval)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
