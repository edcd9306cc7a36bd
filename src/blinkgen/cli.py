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
from .checks import THREADS_TRAINING_HELP, positive_int_arg, threads_arg
from .edit_commands import UPSCALER
from .errors import BlinkgenError, UserInputError
from .textio import read_lines


# generate flags that override what a PNG's record fills in (--from): given, they are listed as
# changes; the adapter (--lora, --lora-scale) is listed when it differs (replay.adapter_overrides)
REPLAYED = ("seed", "steps", "guidance", "sampler", "style", "guidance_interval", "negative", "cache",
            "truncation", "temperature", "variation_seed", "variation_strength", "dtype", "size")


def cmd_generate(args) -> None:
    """One image per (prompt template, seed): a prompt, each line of --prompts-file (-n images
    each), or the record of a PNG (--from); templates resolved per image (blinkgen.prompts);
    requests batched across prompts (--batch-size); every target named and checked first."""
    from . import cli_flags, replay
    from .api import load
    from .checks import as_int
    from .outputs import check_new, check_png_names, image_name
    from .pipeline import MAX_N, Request
    from .pngmeta import grid, save_png
    from .prompts import Wildcards, resolve, wildcard_dirs
    from .seeds import seed_run

    if args.output and args.outdir:
        raise UserInputError("use either -o/--output or --outdir, not both")
    if args.prompts_file and (args.prompt is not None or args.from_png):
        raise UserInputError("--prompts-file replaces the prompt argument and --from; give one of them")
    recorded = replay.read_png(args.from_png) if args.from_png else None
    overrides = [k for k in (*REPLAYED, "prompt") if getattr(args, k) is not None and not
                 (recorded is not None and replay.same_as_recorded(k, getattr(args, k), recorded))]
    if recorded is not None:
        _fill_from_record(args, recorded)
    args.seed = 0 if args.seed is None else args.seed
    args.n = as_int(1 if args.n is None else args.n, "-n", 1, MAX_N)  # before the model loads
    if args.prompt is None and not args.prompts_file:
        raise UserInputError("give a prompt, --prompts-file FILE or --from IMAGE.png")
    if args.prompt is not None and not args.prompt.strip():
        raise UserInputError("the prompt is empty")
    model = args.model or (replay.model_for(recorded) if recorded is not None else "default")
    gen = load(model, device=args.device, dtype=args.dtype or "fp32")
    if recorded is not None and not args.any_model:  # the recorded adapter is checked unless --lora replaces it
        warning = replay.check_model(recorded, gen, args.from_png, check_adapter=args.lora is None)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    kw = replay.settings_kwargs(recorded, gen) if recorded is not None else {}
    steps, guidance, sampler = (v if v is not None else rec for v, rec in
                                ((args.steps, kw.pop("steps", None)), (args.guidance, kw.pop("guidance", None)),
                                 (args.sampler, kw.pop("sampler", None))))
    given = cli_flags.given_settings(args)  # {API name: flag}: errors about these name the flag
    kw.update({api: getattr(args, cli_flags.dest(flag)) for api, flag in given.items()})
    cli_flags.apply_lora_flags(args, kw, given)
    settings = cli_flags.settings(gen, steps, guidance, sampler, kw, given)
    if recorded is not None and (args.lora is not None or args.lora_scale is not None):  # given, and differing
        overrides += replay.adapter_overrides(recorded, settings)
    if getattr(settings, "negative_prompt", None) and settings.guidance == 1.0:
        print("warning: the negative prompt has no effect at guidance 1 (no unconditional branch)", file=sys.stderr)

    templates = read_lines(args.prompts_file, "prompts file") if args.prompts_file else [args.prompt]
    if not templates:
        raise UserInputError(f"prompts file {args.prompts_file} has no prompts")
    n = args.n
    total = len(templates) * n
    seeds = [args.seed] * total if args.fixed_seed else seed_run(args.seed, total)
    if (args.variation_seed is None) != (args.variation_strength is None):
        raise UserInputError("--variation-seed and --variation-strength go together")
    words = {k: f for k, f in {**cli_flags.REQUEST_FLAGS, **getattr(args, "request_flags", {})}.items()
             if k in overrides}  # request flags the user gave (vary's --strength is variation_strength)
    wildcards = Wildcards(wildcard_dirs(args.wildcards or (), args.prompts_file))
    literal = args.literal or recorded is not None and args.prompt == recorded["prompt"]
    items = []  # (template, Request)
    with cli_flags.flag_words(words):
        vseeds = seed_run(args.variation_seed, total, "variation_seed") if args.variation_seed is not None \
            else [None] * total
        for k in range(total):
            t, sd = templates[k // n], seeds[k]
            prompt = t if literal else resolve(t, sd, wildcards)
            vstrength = None if vseeds[k] is None else args.variation_strength
            items.append((t, Request(prompt, sd, variation_seed=vseeds[k], variation_strength=vstrength).check()))
    if literal and recorded is not None and recorded.get("prompt_template"):
        templates = [recorded["prompt_template"]]  # what the PNG says it was drawn from
        items = [(templates[0], r) for _, r in items]
    up = None
    if args.size is not None and args.size < gen.image_size:
        raise UserInputError(f"--size {args.size}: this model draws {gen.image_size}-px images; --size takes "
                             f"{gen.image_size} or a larger size an upscaler makes ({2 * gen.image_size} with the "
                             "embedded x2 upscaler); shrink the PNG afterwards for a smaller one")
    if args.size is not None and args.size != gen.image_size:  # e.g. 128 from a 64-px model: upscale
        from .api import load_upscaler

        up = load_upscaler(args.upscaler or UPSCALER, gen.image_size, args.size, device=args.device)
    params = []
    for t, r in items:
        p = gen.png_parameters(r.prompt, r.seed, settings, r)
        if t != r.prompt:
            p["prompt_template"] = t
        if up is not None:
            p = {**p, "size": args.size, "upscaler": up.name}
        params.append(p)
    outdir = Path(args.outdir) if args.outdir else Path(".")
    one_grid = args.grid and total > 1
    # Every target is named (outputs.image_name: prompt slug, seed, hash of prompt + settings)
    # and checked before any work, so a refusal costs nothing and nothing is half-written.
    if one_grid:
        grid_params = {**params[0], "n": total, "seeds": seeds}
        if len(templates) > 1 or any(r.prompt != items[0][1].prompt for _, r in items):
            grid_params["prompts"] = [r.prompt for _, r in items]
        paths = [Path(args.output) if args.output else outdir / image_name(grid_params, args.seed, "grid")]
    elif args.output:
        p = Path(args.output)
        paths = [p] if total == 1 else [p.with_name(f"{p.stem}-{r.seed}{'-v' + str(r.variation_seed) if r.variation_seed is not None else ''}{p.suffix or '.png'}")
                                        for _, r in items]
    else:
        paths = [outdir / image_name(pp, r.seed, "" if r.variation_seed is None else f"v{r.variation_seed}")
                 for pp, (_, r) in zip(params, items)]
    if len(set(paths)) < len(paths):
        raise UserInputError("two images would get the same file name; use --outdir or --grid")
    check_png_names(paths)
    check_new(paths, args.overwrite)
    images = []
    for i in range(0, total, args.batch_size):  # batched across prompts; an image never depends on its batch
        images += gen.sample([r for _, r in items[i:i + args.batch_size]], settings).images
    if up is not None:
        from .api import upscale

        images = upscale(images, up)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    if one_grid:
        save_png(grid(images), paths[0], grid_params, args.overwrite)
        made = [grid(images)]
    else:
        for im, pp, path in zip(images, params, paths):
            save_png(im, path, pp, args.overwrite)
        made = images
    for p in paths:
        print(p)
    if recorded is not None and not args.fixed_seed:
        if overrides:
            print(f"replayed {args.from_png} with changes: {', '.join(overrides)}", file=sys.stderr)
        else:
            diff = replay.difference(args.from_png, made[0], recorded, gen)
            print(f"warning: {args.from_png} {diff}" if diff else f"reproduced {args.from_png} bit for bit",
                  file=sys.stderr)


def _fill_from_record(args, rec: dict) -> None:
    """Fill the generate flags the user did not give from a PNG's record (--from)."""
    from . import replay

    seeds = rec.get("seeds")
    if args.seed is None:
        args.seed = int(seeds[0] if isinstance(seeds, list) and seeds else rec["seed"])
    if isinstance(seeds, list) and len(seeds) > 1 and args.n is None:
        if rec.get("prompts"):
            raise UserInputError(f"{args.from_png} is a grid of several prompts; replay its images one by one")
        args.n, args.grid = len(seeds), True
    if args.prompt is None:
        args.prompt = rec["prompt"]
    if args.variation_seed is None and rec.get("variation_seed") is not None:
        args.variation_seed, args.variation_strength = rec["variation_seed"], \
            args.variation_strength if args.variation_strength is not None else rec.get("variation_strength")
    if args.dtype is None and rec.get("dtype"):
        args.dtype = rec["dtype"]
    opts = replay.generate_options(rec)  # made at --size through an upscaler: the same again
    if opts and args.size is None:
        args.size = opts["size"]
        if args.upscaler is None:  # not given: the recorded one (an explicit --upscaler wins)
            args.upscaler = replay.upscaler_for(rec)


def _add_generate(sub) -> None:
    from . import cli_flags
    from .families import sampler_help

    p = sub.add_parser("generate", help="generate images from a text prompt, a prompt list or a PNG's record")
    p.add_argument("prompt", nargs="?", default=None,
                   help="what to draw; {a|b} picks one alternative and __name__ one line of the wildcard "
                        "file name.txt, per image from its seed (see --wildcards)")
    p.add_argument("-n", type=int, default=None, help="images per prompt (1-256; default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first image (default 0); then seed+1, ...")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--sampler", default=None, help=sampler_help())
    p.add_argument("--style", default=None, help="diffusion, gan, vae: style phrase appended to the prompt "
                   "(\"in <style> style\"), unless the prompt already names one of the model's styles; "
                   "default: the model's; 'none' for none")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="diffusion: guide only for noise levels t in [LO, HI] (default: the model's)")
    p.add_argument("--cache", default=None, metavar="deep:N", help="diffusion: step caching, a full network "
                   "pass every N steps and the deep blocks reused in between (faster multi-step sampling)")
    p.add_argument("--truncation", type=float, default=None, help="gan: noise scale in [0, 2] (below 1: more "
                   "typical, less varied images); default: the model's")
    p.add_argument("--temperature", type=float, default=None, help="vae: scale of the prior's spread in [0, 2] "
                   "(0 = the prompt's most typical image); default: the model's")
    p.add_argument("--size", type=int, default=None, help="output side in pixels; above the model's "
                   "(128 for a 64-px model) the images go through --upscaler")
    p.add_argument("--upscaler", default=None, help="upscaler model (embedded name or folder) for --size "
                   f"(default: the PNG's recorded one with --from, else the embedded '{UPSCALER}')")
    cli_flags.add_lora_flags(p)
    _add_generate_everyday(p)
    p.add_argument("--model", default=None, help="embedded model name or model folder (default: default, "
                   "or the model named in the --from PNG)")
    p.add_argument("-o", "--output", default=None, help="output PNG path")
    p.add_argument("--outdir", default=None, help="write one PNG per image into this folder, named "
                   "PROMPT-SEED-TAG.png (TAG: a hash of the prompt and settings)")
    p.add_argument("--grid", action="store_true", help="write one grid image instead of n files")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (else refused)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (network precision; default fp32)")
    p.set_defaults(func=cmd_generate, fixed_seed=False)


def _add_generate_everyday(p) -> None:
    """generate's flags for negative prompts, prompt lists, variation seeds and replay (issue 16)."""
    p.add_argument("--negative", default=None, metavar="TEXT",
                   help="negative prompt: guidance steers away from it (replaces the null prompt; '' for none)")
    p.add_argument("--prompts-file", default=None, metavar="FILE",
                   help="one prompt (template) per line; -n images each, batched across prompts")
    p.add_argument("--wildcards", action="append", default=None, metavar="DIR",
                   help="folder of wildcard files NAME.txt for __NAME__ (repeatable); also searched: "
                        "wildcards/ beside the prompts file, $BLINKGEN_WILDCARDS, ./wildcards")
    p.add_argument("--literal", action="store_true", help="take the prompt as it is: no {a|b} or __name__")
    p.add_argument("--batch-size", type=positive_int_arg, default=16, help="images per model call (default 16)")
    p.add_argument("--variation-seed", type=int, default=None, metavar="S",
                   help="mix in this seed's noise (S, S+1, ... for n images), by --variation-strength")
    p.add_argument("--variation-strength", type=float, default=None, metavar="A",
                   help="0 = the --seed image exactly, 1 = the variation seed's image; 0.1-0.3 = a near neighbour")
    p.add_argument("--from", dest="from_png", default=None, metavar="IMAGE.png",
                   help="replay a blinkgen PNG: restore its prompt, seed and settings (flags given override "
                        "them), check its model's weights, and say whether the result is bit-identical")
    p.add_argument("--any-model", action="store_true", help="with --from: use the PNG's settings with a "
                   "model other than the one that made it")


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
        typ = threads_arg if f.name == "threads" else \
            {"int": int, "int | None": int, "float": float, "bool": _yes_no}.get(str(f.type), str)
        help_ = {"ae_steps": "(default: 2 x --steps, within [10, 2000])",
                 "ae_preset": "(default: tiny for --preset tiny, else S)",
                 "threads": THREADS_TRAINING_HELP}.get(f.name, f"(default: {f.default})")
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
def cmd_models(args) -> None:
    from .api import embedded_models

    for m in embedded_models():
        print(m)


# the commands that run a model and take the top-level --threads (speed/threads.py)
THREADED_COMMANDS = frozenset({"generate", "edit", "vary", "upscale", "caption", "grid", "eval", "bench", "serve"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blinkgen", description="Text-to-image generators you train and run fast.")
    parser.add_argument("--version", action="version", version=f"blinkgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--threads", type=threads_arg, default=None, metavar="N", dest="global_threads",
                        help="CPU threads of the commands that run a model (generate, edit, vary, upscale, caption, "
                             "grid, eval, bench, serve): N >= 1; 0 or left out: the idle cores, at most torch's "
                             "default (speed/threads.py), or OMP_NUM_THREADS when set. Training takes its own "
                             "--threads (0 or left out: torch's default)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_train(sub)
    sub.add_parser("models", help="list the embedded models").set_defaults(func=cmd_models)
    from .data import commands as data_commands
    from .eval import commands as eval_commands
    from .serve import commands as serve_commands
    from .train import commands as train_commands

    from . import edit_commands, grid

    for module in (grid, train_commands, data_commands, serve_commands, eval_commands, edit_commands):  # each adds its own subcommands
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .usage import parse

    args = parse(build_parser(), argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in THREADED_COMMANDS:
            from .speed.threads import apply_threads

            try:
                apply_threads(args.global_threads or None)  # 0: the default, as left out (checks.threads_arg)
            except ValueError as e:
                raise UserInputError(str(e)) from None
        elif args.global_threads is not None:
            raise UserInputError(f"--threads before the command is for {', '.join(sorted(THREADED_COMMANDS))}; "
                                 "train, finetune and distill take their own --threads after the command")
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
