"""`blinkgen` command line: thin -- parse, build a config, call the library.

Every user error (a BlinkgenError) prints one line and exits with status 2; Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from pathlib import Path

from . import __version__
from .errors import BlinkgenError, UserInputError


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "image"


def cmd_generate(args) -> None:
    from .api import load
    from .pngmeta import grid, save_png

    if args.output and args.outdir:
        raise UserInputError("use either -o/--output or --outdir, not both")
    if not args.prompt.strip():
        raise UserInputError("the prompt is empty")
    gen = load(args.model, device=args.device, dtype=args.dtype)
    extra = {k: getattr(args, k) for k in ("style", "truncation", "temperature") if getattr(args, k) is not None}
    settings = gen.settings(args.steps, args.guidance, args.sampler, **extra)
    seed = args.seed
    images = gen.generate(args.prompt, n=args.n, seed=seed, steps=settings.steps,
                          guidance=settings.guidance, sampler=settings.sampler, **extra)
    seeds = [seed + i for i in range(args.n)]
    params = gen.png_parameters(args.prompt, seed, settings)
    outdir = Path(args.outdir) if args.outdir else None
    if outdir:
        outdir.mkdir(parents=True, exist_ok=True)
    written = []
    if args.grid and args.n > 1:
        path = Path(args.output) if args.output else (outdir or Path(".")) / f"{_slug(args.prompt)}-{seed}-grid.png"
        save_png(grid(images), path, {**params, "seeds": seeds})
        written.append(path)
    else:
        for im, s in zip(images, seeds):
            if args.output:
                p = Path(args.output)
                path = p if args.n == 1 else p.with_name(f"{p.stem}-{s}{p.suffix or '.png'}")
            else:
                path = (outdir or Path(".")) / f"{_slug(args.prompt)}-{s}.png"
            save_png(im, path, {**params, "seed": s})
            written.append(path)
    for p in written:
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
    p.add_argument("--truncation", type=float, default=None, help="gan: noise scale in [0, 2] (below 1: more "
                   "typical, less varied images); default: the model's")
    p.add_argument("--temperature", type=float, default=None, help="vae: scale of the prior's spread in [0, 2] "
                   "(0 = the prompt's most typical image); default: the model's")
    p.add_argument("--model", default="default", help="embedded model name or model folder")
    p.add_argument("-o", "--output", default=None, help="output PNG path")
    p.add_argument("--outdir", default=None, help="write one PNG per image into this folder")
    p.add_argument("--grid", action="store_true", help="write one grid image instead of n files")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16 (network precision)")
    p.set_defaults(func=cmd_generate)


def cmd_train(args) -> None:
    from .train.config import TrainConfig
    from .train.loop import train

    base = TrainConfig.from_json(args.config).to_dict() if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            base[f.name] = v
    if args.prompts_file:
        base["sample_prompts"] = [l.strip() for l in Path(args.prompts_file).read_text().splitlines() if l.strip()]
    cfg = TrainConfig.from_dict(base)
    out = train(cfg, resume=args.resume)
    print(out)


def _add_train(sub) -> None:
    from .families import all_families
    from .train.config import TrainConfig

    fams = all_families()
    p = sub.add_parser("train", help=f"train a model ({' | '.join(n for f in fams for n in (f.name, *f.aliases))}) "
                       "on a dataset")
    p.add_argument("--config", default=None, help="JSON file of training options (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--prompts-file", default=None, help="prompts for the periodic sample grids")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "sample_prompts":
            continue
        typ = {"int": int, "float": float}.get(str(f.type), str)
        help_ = f"(default: {f.default})"
        if f.name == "family":
            tasks = "; ".join(f"{x.name}: tasks {', '.join(x.tasks)} (default {x.default_task})" for x in fams)
            older = ", ".join(f"{a} = {x.name} --task {t}" for x in fams for a, t in x.aliases.items())
            help_ = f"{tasks}; older spellings {older} {help_}"
        elif f.name == "task":
            help_ = "the family's training task (default: the family's own)"
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ, default=None, help=help_)
    p.set_defaults(func=cmd_train)


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
    sub.add_parser("models", help="list the embedded models").set_defaults(func=cmd_models)
    from .data import commands as data_commands
    from .eval import commands as eval_commands
    from .serve import commands as serve_commands

    for module in (data_commands, serve_commands, eval_commands):  # each package adds its own subcommands
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
