"""LoRA fine-tuning on a concept the model has never seen (issue 13): ten pictures of the
procedural mascot (bench/mascot.py), `blinkgen finetune` on 8 of them (2 held out for validation)
within a CPU budget, then before/after:

- nearest-neighbour hit rate (eval/recognise.py): each image of the concept prompt is compared in
  pixels (32x32) with the emoji training folder plus the ten mascot pictures; a hit = a mascot
  picture among its 5 nearest of those ~7,600 images;
- alignment (eval/evaluate.py's number): cosine of the contrastive evaluator's image embedding
  and the prompt's, with the real mascot pictures' alignment as the ceiling (the evaluator never
  saw the mascot, so this is the weaker of the two signals);
- the recognisability check on the default prompts (bench/prompts/default_grid.txt, the
  nearest-neighbour check against the emoji folder) with and without the adapter: it must not
  collapse.
Grids and the validation curve go to --figures; numbers to --out (JSON).

    nice -n 19 python bench/bench_lora.py --out bench/results/lora_mascot.json --run ~/.cache/blinkgen/runs/lora-mascot \\
        --cpu-limit 600 --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mascot  # noqa: E402

import blinkgen  # noqa: E402
from blinkgen.data.folder import load_folder  # noqa: E402
from blinkgen.data.registry import default_emoji_dir  # noqa: E402
from blinkgen.data.types import ImageCaptionSet  # noqa: E402
from blinkgen.eval import metrics as M  # noqa: E402
from blinkgen.eval.contrastive import load_evaluator  # noqa: E402
from blinkgen.eval.evaluate import versions  # noqa: E402
from blinkgen.eval.recognise import nearest_neighbour_hits  # noqa: E402
from blinkgen.outputs import parse_args_with_out, write_text  # noqa: E402
from blinkgen.pngmeta import grid  # noqa: E402

SEEDS = 16  # images of the concept prompt per setting
PROMPTS_FILE = Path(__file__).resolve().parent / "prompts" / "default_grid.txt"


def concept_scores(images, prompt: str, reference: ImageCaptionSet, ev) -> dict:
    nn = nearest_neighbour_hits(images, [prompt] * len(images), reference)
    ranks = [r["rank"] for r in nn["per_prompt"]]
    align = M.alignment(ev.embed_images(images), ev.embed_texts([prompt] * len(images)))
    return {"nn_hits": nn["hits"], "n": nn["n"], "nn_rate": nn["rate"],
            "nearest_is_mascot": sum(r == 1 for r in ranks) / len(ranks), "median_rank": sorted(ranks)[len(ranks) // 2],
            "alignment": align}


def default_prompt_scores(pipe, prompts: list[str], emoji: ImageCaptionSet, ev, **settings) -> tuple[dict, list]:
    images = pipe.generate(prompts, seed=0, **settings)
    nn = nearest_neighbour_hits(images, prompts, emoji)
    align = M.alignment(ev.embed_images(images), ev.embed_texts(prompts))
    return {"nn_hits": nn["hits"], "n": nn["n"], "nn_rate": nn["rate"], "alignment": align}, images


def val_plot(run: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = [json.loads(x) for x in (run / "val_history.jsonl").read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h["step"] for h in hist], [h["val_loss"] for h in hist], marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out flow-matching loss")
    ax.set_title("LoRA on 8 mascot pictures (2 held out)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--run", required=True, help="run folder (data/ and the fine-tuning run)")
    ap.add_argument("--out", required=True, help="JSON results")
    ap.add_argument("--figures", default="bench/results/lora", help="folder for the grids and the plot")
    ap.add_argument("--cpu-limit", type=float, default=600.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scales", default="1.0,0.8", help="adapter scales to score")
    ap.add_argument("--prior-weight", type=float, default=None, help="finetune's --prior-weight (default: its default)")
    ap.add_argument("--reuse", action="store_true", help="score an existing run folder instead of training")
    a = parse_args_with_out(ap, argv)  # an existing --out is refused before any work, in one line
    torch.set_num_threads(a.threads)
    run, figs = Path(a.run).expanduser(), Path(a.figures)
    figs.mkdir(parents=True, exist_ok=True)
    data = mascot.make_folder(run / "data", n=10, size=64, seed=0)
    if not a.reuse:
        from blinkgen.train.commands import finetune_config
        from blinkgen.train.loop import train

        cfg = finetune_config(a.model, str(data), str(run / "ft"), cpu_limit=a.cpu_limit, threads=a.threads,
                              prior_weight=a.prior_weight)
        t0 = time.perf_counter()
        train(cfg)
        print(f"fine-tuned in {time.perf_counter() - t0:.0f}s wall", flush=True)
    adapter = run / "ft"
    stats = json.loads((adapter / "train_stats.json").read_text())
    adapter_cfg = json.loads((adapter / "model" / "config.json").read_text())
    val_plot(adapter, figs / "val_loss.png")

    pipe = blinkgen.load(a.model)
    ev = load_evaluator()
    concept = load_folder(data, 64)
    emoji = load_folder(default_emoji_dir(), 64)
    reference = ImageCaptionSet.concat([emoji, concept])
    prompt = mascot.NAME
    scales = [float(x) for x in a.scales.split(",")]
    settings = {"base": {}, **{f"lora@{s:g}": {"lora": str(adapter), "lora_scale": s} for s in scales}}
    out = {"model": a.model, "prompt": prompt, "seeds": SEEDS, "adapter": adapter_cfg, "train_stats": stats,
           "real_alignment": M.alignment(ev.embed_images(concept.images), ev.embed_texts([prompt] * len(concept))),
           "concept": {}, "default_prompts": {}}
    prompts = [p for p in PROMPTS_FILE.read_text().splitlines() if p.strip()]
    rows = []
    for name, s in settings.items():
        ims = pipe.generate(prompt, n=SEEDS, seed=0, **s)
        out["concept"][name] = concept_scores(ims, prompt, reference, ev)
        dp, dims = default_prompt_scores(pipe, prompts, emoji, ev, **s)
        out["default_prompts"][name] = dp
        rows.append((name, ims, dims))
        print(name, json.dumps(out["concept"][name]), json.dumps(dp), flush=True)
    grid([*concept_images(concept)], cols=10).save(figs / "mascot_pictures.png")
    grid([im for _, ims, _ in rows for im in ims[:8]], cols=8).save(figs / "concept_before_after.png")
    grid([im for _, _, dims in rows for im in dims[:16]], cols=16).save(figs / "default_prompts.png")
    samples = sorted((adapter / "samples").glob("step-*.png"))
    if samples:
        from PIL import Image

        ims = [Image.open(p) for p in samples]
        sheet = Image.new("RGB", (ims[0].width, sum(i.height for i in ims)), "white")
        y = 0
        for im in ims:
            sheet.paste(im, (0, y))
            y += im.height
        sheet.save(figs / "training_samples.png")
        out["training_sample_steps"] = [int(p.stem.split("-")[1]) for p in samples]
    out["default_prompts_file"] = str(PROMPTS_FILE.name)
    out["rows_in_grids"] = list(settings)
    out["command"] = "python bench/bench_lora.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out["versions"] = versions()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(a.out), json.dumps(out, indent=2), a.overwrite)


def concept_images(ds: ImageCaptionSet):
    from PIL import Image

    return [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in ds.images]


if __name__ == "__main__":
    main()
