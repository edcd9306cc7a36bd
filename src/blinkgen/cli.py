"""`blinkgen` command line: thin -- parse, build a config, call the library.

Every user error (a BlinkgenError) prints one line and exits with status 2; Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import BlinkgenError, UserInputError
from .textio import read_lines


def cmd_generate(args) -> None:
    from .api import load
    from .outputs import check_new, image_name
    from .pngmeta import grid, save_png
    from .seeds import seed_run

    if args.output and args.outdir:
        raise UserInputError("use either -o/--output or --outdir, not both")
    if not args.prompt.strip():
        raise UserInputError("the prompt is empty")
    gen = load(args.model, device=args.device, dtype=args.dtype)
    extra = {k: getattr(args, k) for k in ("style", "guidance_interval", "cache", "truncation", "temperature")
             if getattr(args, k, None) is not None}
    if args.lora is not None:
        extra.update(lora=args.lora, lora_scale=args.lora_scale)
    elif args.lora_scale is not None:
        raise UserInputError("--lora-scale needs --lora")
    settings = gen.settings(args.steps, args.guidance, args.sampler, **extra)
    seeds = seed_run(args.seed, args.n)
    params = gen.png_parameters(args.prompt, args.seed, settings)
    up = None
    if args.size is not None and args.size != gen.image_size:  # e.g. 128 from a 64-px model: upscale
        from .api import load_upscaler

        up = load_upscaler(args.upscaler, gen.image_size, args.size, device=args.device)
        params = {**params, "size": args.size, "upscaler": up.name}
    outdir = Path(args.outdir) if args.outdir else Path(".")
    one_grid = args.grid and args.n > 1
    # Every target is named (outputs.image_name: prompt slug, seed, hash of prompt + settings)
    # and checked before any work, so a refusal costs nothing and nothing is half-written.
    if one_grid:
        paths = [Path(args.output) if args.output else outdir / image_name({**params, "n": args.n}, args.seed, "grid")]
    elif args.output:
        p = Path(args.output)
        paths = [p] if args.n == 1 else [p.with_name(f"{p.stem}-{s}{p.suffix or '.png'}") for s in seeds]
    else:
        paths = [outdir / image_name(params, s) for s in seeds]
    check_new(paths, args.overwrite)
    images = gen.generate(args.prompt, n=args.n, seed=args.seed, steps=settings.steps,
                          guidance=settings.guidance, sampler=settings.sampler, **extra)
    if up is not None:
        from .api import upscale

        images = upscale(images, up)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    if one_grid:
        save_png(grid(images), paths[0], {**params, "seeds": seeds}, args.overwrite)
    else:
        for im, s, path in zip(images, seeds, paths):
            save_png(im, path, {**params, "seed": s}, args.overwrite)
    for p in paths:
        print(p)


def _add_generate(sub) -> None:
    from .families import sampler_help

    p = sub.add_parser("generate", help="generate images from a text prompt")
    p.add_argument("prompt")
    p.add_argument("-n", type=int, default=1, help="number of images (1-256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--sampler", default=None, help=sampler_help())
    p.add_argument("--style", default=None, help="diffusion, gan, vae: style phrase appended to the prompt "
                   "(\"in <style> style\"); default: the model's; 'none' for none")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="diffusion: guide only for noise levels t in [LO, HI] (default: the model's)")
    p.add_argument("--cache", default=None, metavar="deep:N", help="diffusion: step caching, a full network "
                   "pass every N steps and the deep blocks reused in between (faster multi-step sampling)")
    p.add_argument("--truncation", type=float, default=None, help="gan: noise scale in [0, 2] (below 1: more "
                   "typical, less varied images); default: the model's")
    p.add_argument("--temperature", type=float, default=None, help="vae: scale of the prior's spread in [0, 2] "
                   "(0 = the prompt's most typical image); default: the model's")
    p.add_argument("--model", default="default", help="embedded model name or model folder")
    p.add_argument("--size", type=int, default=None, help="output side in pixels; above the model's "
                   "(128 for a 64-px model) the images go through --upscaler")
    p.add_argument("--upscaler", default="upscaler", help="upscaler model (embedded name or folder) for --size")
    p.add_argument("--lora", default=None, metavar="DIR", help="a LoRA adapter fine-tuned from --model "
                   "(`blinkgen finetune`; its folder or the run folder)")
    p.add_argument("--lora-scale", type=float, default=None, help="adapter strength (default 1)")
    p.add_argument("-o", "--output", default=None, help="output PNG path")
    p.add_argument("--outdir", default=None, help="write one PNG per image into this folder, named "
                   "PROMPT-SEED-TAG.png (TAG: a hash of the prompt and settings)")
    p.add_argument("--grid", action="store_true", help="write one grid image instead of n files")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (else refused)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16 (network precision)")
    p.set_defaults(func=cmd_generate)


def cmd_train(args) -> None:
    from .train.config import TrainConfig
    from .train.loop import train
    from .train.plan import format_plan, stage_plan

    base = TrainConfig.from_json(args.config).to_dict() if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            base[f.name] = v
    if args.prompts_file:
        base["sample_prompts"] = read_lines(args.prompts_file, "prompts file")
    cfg = TrainConfig.from_dict(base)
    print(format_plan(stage_plan(cfg), cfg.batch_size), file=sys.stderr, flush=True)  # before anything runs
    out = train(cfg, resume=args.resume)
    print(out)


def _add_train(sub) -> None:
    from .families import trainable
    from .train.config import TrainConfig

    fams = trainable()
    p = sub.add_parser("train", help=f"train a model ({' | '.join(n for f in fams for n in (f.name, *f.aliases))}) "
                       "on a dataset")
    p.add_argument("--config", default=None, help="JSON file of training options (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--prompts-file", default=None, help="prompts for the periodic sample grids")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "sample_prompts":
            continue
        typ = {"int": int, "int | None": int, "float": float, "bool": _yes_no}.get(str(f.type), str)
        help_ = {"ae_steps": "(default: 2 x --steps, within [10, 2000])",
                 "ae_preset": "(default: tiny for --preset tiny, else S)"}.get(f.name, f"(default: {f.default})")
        if f.name == "family":
            tasks = "; ".join(f"{x.name}: tasks {', '.join(x.tasks)} (default {x.default_task})" for x in fams)
            older = ", ".join(f"{a} = {x.name} --task {t}" for x in fams for a, t in x.aliases.items())
            help_ = f"{tasks}; older spellings {older} {help_}"
        elif f.name == "task":
            help_ = "the family's training task (default: the family's own)"
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ, default=None, help=help_)
    p.set_defaults(func=cmd_train)


def _yes_no(text: str) -> bool:
    if text.lower() not in ("yes", "no", "true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")
    return text.lower() in ("yes", "true", "1")
def cmd_distill(args) -> None:
    from .api import resolve
    from .families.diffusion.distill import teacher_data_spec
    from .modelio import read_config
    from .train.config import TrainConfig
    from .train.loop import train

    folder = resolve(args.teacher).resolve()
    data = args.data or teacher_data_spec(folder)
    if not data:
        raise UserInputError(f"{folder} does not record the data it was trained on; pass --data")
    opts = {k: getattr(args, k) for k in ("out", "batch_size", "lr", "warmup", "ema_decay", "cpu_limit", "time_limit",
                                          "threads", "seed", "save_dtype", "eval_every", "sample_every",
                                          "ckpt_every", "mixed_precision", "self_consistency_fraction")}
    cfg = TrainConfig.from_dict({
        **opts, "family": "diffusion", "task": "distill", "teacher": str(folder), "data": data,
        "size": int(read_config(folder)["image_size"]), "steps": args.train_steps,
        "distill_objective": args.objective, "distill_steps": args.steps, "distill_base_steps": args.base_steps,
        "distill_guidance": args.guidance or 0.0, "log_every": 25})
    print(train(cfg, resume=args.resume))


def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="distil a diffusion model into a few-step one (shortcut model; "
                       "classifier-free guidance folded in, so one pass per step)")
    p.add_argument("--from", dest="teacher", required=True, help="the model to distil (folder or embedded name)")
    p.add_argument("--steps", type=int, default=2, help="default sampling steps of the result: 1, 2, 4, ... (default 2)")
    p.add_argument("--out", required=True, help="run folder; the distilled model is written to OUT/model")
    p.add_argument("--data", default=None, help="training images (default: the teacher's recorded training data)")
    p.add_argument("--objective", default="shortcut", choices=["shortcut", "consistency"])
    p.add_argument("--train-steps", type=int, default=4000, help="optimizer steps (default 4000)")
    p.add_argument("--base-steps", type=int, default=32, help="finest grid, a power of 2 (default 32)")
    p.add_argument("--guidance", type=float, default=None, help="guidance folded in (default: the teacher's)")
    p.add_argument("--self-consistency-fraction", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--cpu-limit", type=float, default=0.0, help="CPU-seconds of training (0 = off)")
    p.add_argument("--time-limit", type=float, default=0.0, help="seconds (0 = off)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--mixed-precision", default="auto")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(func=cmd_distill)


def cmd_models(args) -> None:
    from .api import embedded_models

    for m in embedded_models():
        print(m)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blinkgen", description="Text-to-image generators you train and run fast.")
    parser.add_argument("--version", action="version", version=f"blinkgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_train(sub)
    _add_distill(sub)
    sub.add_parser("models", help="list the embedded models").set_defaults(func=cmd_models)
    from .data import commands as data_commands
    from .eval import commands as eval_commands
    from .serve import commands as serve_commands
    from .train import commands as train_commands

    from . import edit_commands

    for module in (train_commands, data_commands, serve_commands, eval_commands, edit_commands):  # each adds its own subcommands
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except BlinkgenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
