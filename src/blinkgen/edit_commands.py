"""`blinkgen edit | vary | upscale`: images in, through the one image reader (data/image_io.py).
Each handler parses, builds Requests, calls the library and writes PNGs that record how they were
made (the `parameters` chunk), never replacing a file silently (outputs.py).

    blinkgen edit photo.png "a red heart" [--mask m.png] [--strength 0.6] [-n 4] [--lora DIR]
    blinkgen vary photo.png [-n 4] [--strength 0.6] [--prompt "..."]   # prompt: the best caption
    blinkgen upscale small.png [-o big.png]                              # 64 -> 128 px
"""
from __future__ import annotations

from pathlib import Path

from . import cli_flags
from .errors import UserInputError

UPSCALER = "upscaler"  # the embedded upscaler's name (weights/upscaler)
# what `upscale` says of the sampling options it does not take, beside "unrecognized arguments"
_NO_ADAPTER = ("upscale runs the upscaler, a model of its own that takes no LoRA adapter; "
               "--lora is for generate, edit and vary")
UPSCALE_NOTES = {"--lora": _NO_ADAPTER, "--lora-scale": _NO_ADAPTER}


def _settings(pipe, args):
    """The settings of an edit or an img2img variation: --steps, --guidance, --sampler, --style and
    the adapter (--lora, --lora-scale, as generate's), errors naming the flags (cli_flags)."""
    given = cli_flags.given_settings(args)  # --style: the one other settings flag edit and vary have
    kw = {api: getattr(args, cli_flags.dest(flag)) for api, flag in given.items()}
    cli_flags.apply_lora_flags(args, kw, given)
    return cli_flags.settings(pipe, args.steps, args.guidance, args.sampler, kw, given)


def _paths(args, params: dict, seeds: list[int], kind: str) -> list[Path]:
    from .outputs import image_name

    if args.output and args.outdir:
        raise UserInputError("use either -o/--output or --outdir, not both")
    if args.output:
        p = Path(args.output)
        return [p] if len(seeds) == 1 else [p.with_name(f"{p.stem}-{s}{p.suffix or '.png'}") for s in seeds]
    outdir = Path(args.outdir or ".")
    return [outdir / image_name(params, s, kind) for s in seeds]


def _write(images, paths, params_for, overwrite: bool) -> None:
    from .pngmeta import save_png

    for im, path, params in zip(images, paths, params_for):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(im, path, params, overwrite)
        print(path)


def check_inputs(path, image, mask_path=None, mask=None) -> None:
    """The CLI's checks of an edit's or upscale's input, before any work and in the user's words
    (the pipeline's own say init_image, the API's name): the image is square, the mask has its
    size and marks something to repaint (255 = repaint; an all-black mask would return the
    image unchanged). UserInputError otherwise."""
    import numpy as np

    w, h = image.size
    if w != h:
        raise UserInputError(f"{path} is {w}x{h} px; blinkgen edits and upscales square images: crop or pad "
                             f"it to {min(w, h)}x{min(w, h)} or {max(w, h)}x{max(w, h)} first")
    if mask is None:
        return
    if mask.size != image.size:
        raise UserInputError(f"the mask {mask_path} is {mask.size[0]}x{mask.size[1]} px but the image {path} is "
                             f"{w}x{h}: they must be the same size")
    if not np.asarray(mask).any():
        raise UserInputError(f"the mask {mask_path} is all black, so nothing would be repainted "
                             "(white marks what to repaint, black what to keep)")


def note_resize(path, side: int, takes: int, gives: int) -> None:
    """Say on stderr when an input image is resampled to the model's size (LANCZOS,
    sampling/edit.init_pixels): a 200-px picture through the x2 upscaler comes out 128 px, not 400."""
    import sys

    if side != takes:
        print(f"note: {path} is {side}x{side} px; this model takes {takes}x{takes}, so it is resized to "
              f"{takes} px first and the output is {gives}x{gives}", file=sys.stderr)


def run_edit(args, prompt: str, kind: str, extra_params: dict | None = None) -> None:
    """Shared by edit and vary: read the image (and mask), n requests seed, seed+1, ...; each PNG
    records the edit (pngmeta.edit_record: kind, source names, the strength used, default or not).
    UserInputError for a non-square image or a mask of another size, before any work."""
    from .api import load
    from .checks import as_int
    from .data.image_io import read_image, read_mask
    from .outputs import check_new, check_png_names
    from .pipeline import MAX_N, Request
    from .pngmeta import edit_record
    from .seeds import seed_run

    args.n = as_int(args.n, "-n", 1, MAX_N)  # -n 0 used to succeed and write nothing
    image = read_image(args.image)
    mask = read_mask(args.mask) if getattr(args, "mask", None) else None
    check_inputs(args.image, image, getattr(args, "mask", None), mask)  # before any work, in the CLI's words
    pipe = load(args.model, device=args.device, dtype=args.dtype or "fp32")
    settings = _settings(pipe, args)
    seeds = seed_run(args.seed, args.n)
    record = edit_record(kind, args.strength, mask is not None, Path(args.image).name,
                         Path(args.mask).name if mask is not None else None)  # the strength used, default or not
    params = {**pipe.png_parameters(prompt, args.seed, settings), **record, **(extra_params or {})}
    paths = _paths(args, params, seeds, kind)
    check_png_names(paths)
    check_new(paths, args.overwrite)
    note_resize(args.image, image.size[0], getattr(pipe, "input_size", pipe.image_size), pipe.image_size)
    reqs = [Request(prompt, s, init_image=image, mask=mask, strength=args.strength) for s in seeds]
    images = pipe.sample(reqs, settings).images
    _write(images, paths, [{**params, "seed": s} for s in seeds], args.overwrite)


def cmd_edit(args) -> None:
    args.seed = 0 if args.seed is None else args.seed
    if not args.prompt.strip():
        raise UserInputError("the prompt is empty")
    if args.strength is not None:
        from .pipeline import check_strength

        check_strength(args.strength)
    run_edit(args, args.prompt, "inpaint" if args.mask else "img2img")


def _recipe(path) -> dict | None:
    """The blinkgen parameters recorded in a PNG when they are a generation to replay
    (replay.read_png), else None: no record, or the record of an edit, upscale or grid
    (NotAGenerationError), which `vary` varies by img2img like any other picture."""
    import sys

    from .errors import BlinkgenError
    from .replay import NotAGenerationError, read_png

    try:
        return read_png(path)
    except NotAGenerationError:
        print(f"{path} records no generation to vary by its recipe (an edit, upscale or grid): "
              "varying it by img2img", file=sys.stderr)  # the fallback is said, not silent
        return None
    except BlinkgenError:
        return None


def vary_recipe(args) -> None:
    """`blinkgen vary IMAGE.png` of a blinkgen PNG (cmd_vary): n neighbours -- its prompt, seed and
    settings (its LoRA adapter too, unless --lora replaces it), with the noise of seeds V, V+1, ...
    mixed in at --strength (cli.cmd_generate: generate --from with a fixed seed)."""
    import argparse
    import sys

    from . import replay
    from .cli import cmd_generate
    from .seeds import random_seed

    rec = replay.read_png(args.image)
    if rec.get("variation_seed") is not None:
        raise UserInputError(f"{args.image} is itself a variation (of seed {rec.get('seed')} by seed "
                             f"{rec['variation_seed']}); vary the base image, or use generate --from "
                             "with another --variation-strength")
    seeds = rec.get("seeds")
    if isinstance(seeds, list) and len(seeds) > 1 and args.seed is None:  # a -n grid: say which image is varied
        print(f"{args.image} is a grid of {len(seeds)} images (seeds {seeds[0]}..{seeds[-1]}); varying the first, "
              f"seed {seeds[0]}: pass --seed S for another", file=sys.stderr)
    ns = argparse.Namespace(
        prompt=None, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance, sampler=args.sampler,
        style=args.style,
        guidance_interval=None, negative=None, prompts_file=None, wildcards=None, literal=True, batch_size=16,
        variation_seed=random_seed() if args.variation_seed is None else args.variation_seed,
        variation_strength=0.2 if args.strength is None else args.strength, from_png=args.image,
        any_model=args.any_model, model=args.model,
        output=args.output, outdir=args.outdir, grid=args.grid, overwrite=args.overwrite, device=args.device,
        dtype=args.dtype, fixed_seed=True, cache=None, truncation=None, temperature=None, lora=args.lora,
        lora_scale=args.lora_scale, size=None, upscaler=None,
        request_flags={"variation_strength": "--strength"})  # errors name vary's flag
    cmd_generate(ns)


def _recorded_prompt(path) -> str | None:
    """The prompt a blinkgen PNG records (an edit's, an upscale's has none), else None: a variation
    of blinkgen's own edit keeps steering towards what it was edited into, not a fresh caption."""
    from .errors import BlinkgenError
    from .pngmeta import read_parameters

    try:
        prompt = read_parameters(path).get("prompt")
    except BlinkgenError:
        return None
    return prompt if isinstance(prompt, str) and prompt.strip() and prompt != "upscale" else None


def cmd_vary(args) -> None:
    """Variations of an image, one command for both kinds:
    - a PNG made by blinkgen `generate` (its recorded prompt, seed and settings), unless --img2img
      or --prompt: the same recipe with other seeds' starting noise mixed in at --strength
      (variation seeds, default 0.2; `generate --from` with a fixed seed; issue 16);
    - any other picture, blinkgen's edits, upscales and grids included: img2img towards --prompt,
      else the prompt the PNG records (a blinkgen edit's), else the image's own best caption (the
      evaluator's captioner), at --strength (default 0.6; issue 12)."""
    if args.prompt is None and not args.img2img and _recipe(args.image) is not None:
        return vary_recipe(args)
    if args.variation_seed is not None or args.any_model or args.grid:
        raise UserInputError("--variation-seed, --any-model and --grid vary a PNG made by blinkgen; "
                             f"{args.image} is varied by img2img (it records no blinkgen recipe, or --img2img/--prompt)")
    args.model = args.model or "default"
    args.seed = 0 if args.seed is None else args.seed
    if args.strength is not None:
        from .pipeline import check_strength

        check_strength(args.strength)  # before the captioner runs
    prompt = args.prompt if args.prompt is not None else _recorded_prompt(args.image)
    extra = {}
    if prompt is not None and args.prompt is None:
        print(f"prompt (recorded in {args.image}): {prompt}")
    if prompt is None:
        from .data.image_io import read_image
        from .eval.caption import caption

        prompt, score = caption(read_image(args.image), top_k=1)[0]
        extra = {"caption_score": round(score, 4)}
        print(f"prompt (best caption, cosine {score:.3f}): {prompt}")
    run_edit(args, prompt, "variation", extra)


def cmd_upscale(args) -> None:
    from .api import load
    from .data.image_io import read_image
    from .outputs import check_new, check_png_names
    from .pipeline import Request

    pipe = load(args.model, device=args.device)
    if "init_image" not in pipe.requires:
        raise UserInputError(f"{args.model} is a {pipe.family} model, not an upscaler")
    image = read_image(args.image)
    check_inputs(args.image, image)
    params = {**pipe.png_parameters("upscale", 0, pipe.settings()), "init_image": Path(args.image).name}
    path = Path(args.output) if args.output else Path(args.outdir or ".") / f"{Path(args.image).stem}-x2.png"
    check_png_names([path])
    check_new([path], args.overwrite)
    note_resize(args.image, image.size[0], pipe.input_size, pipe.image_size)
    res = pipe.sample([Request("upscale", 0, init_image=image)], pipe.settings())
    _write(res.images, [path], [params], args.overwrite)


def _common(p, model_default: str | None = "default", sampling: bool = True, n_default: int = 1) -> None:
    if sampling:
        from .families import sampler_help

        p.add_argument("-n", type=int, default=n_default, help=f"number of images (default {n_default})")
        p.add_argument("--seed", type=int, default=None, help="first seed (then seed+1, ...; default 0)")
        p.add_argument("--strength", type=float, default=None,
                       help="(0, 1]: how far from the image the result may go; img2img: default 0.6, with a "
                            "mask 1; variation seeds of a blinkgen PNG: default 0.2")
        p.add_argument("--steps", type=int, default=None, help="the full schedule's steps (a strength s runs about s x steps)")
        p.add_argument("--guidance", type=float, default=None)
        p.add_argument("--sampler", default=None, help=sampler_help())
        p.add_argument("--style", default=None, help="diffusion: style phrase (\"in <style> style\"): style transfer")
        cli_flags.add_lora_flags(p)  # as generate's; upscale runs an upscaler, which takes none (UPSCALE_NOTES)
        p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (network precision; default fp32, "
                       "or the one a varied blinkgen PNG records)")
    p.add_argument("--model", default=model_default, help="embedded model name or model folder" +
                   (" (default: the one a blinkgen PNG records, else default)" if model_default is None else ""))
    p.add_argument("-o", "--output", default=None, help="output PNG path")
    p.add_argument("--outdir", default=None, help="write the PNGs into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (else refused)")
    p.add_argument("--device", default="cpu")


def register(sub) -> None:
    p = sub.add_parser("edit", help="edit an image with a prompt: img2img, or inpainting with --mask")
    p.add_argument("image", help="the image to edit (PNG, JPEG, WebP, ...; square)")
    p.add_argument("prompt")
    p.add_argument("--mask", default=None, help="what to repaint: transparent pixels (OpenAI's convention), "
                   "or, in a mask without transparency, white pixels; the rest comes back unchanged")
    _common(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("vary", help="variations of an image: of a blinkgen PNG, its recipe with other seeds' "
                       "noise mixed in; of any other picture, img2img towards its best caption")
    p.add_argument("image")
    p.add_argument("--prompt", default=None, help="img2img towards this prompt (default: the image's best caption)")
    p.add_argument("--img2img", action="store_true", help="vary a blinkgen PNG by img2img too, not by its recipe")
    p.add_argument("--variation-seed", type=int, default=None, metavar="V", help="blinkgen PNG: first variation "
                   "seed (then V+1, ...; default: random, recorded in each PNG)")
    p.add_argument("--any-model", action="store_true", help="blinkgen PNG: allow a model other than the one that made it")
    p.add_argument("--grid", action="store_true", help="blinkgen PNG: one grid image instead of n files")
    _common(p, model_default=None, n_default=4)
    p.set_defaults(func=cmd_vary)

    p = sub.add_parser("upscale", help="x2 super-resolution (64 -> 128 px) with an upscaler model")
    p.add_argument("image")
    _common(p, model_default=UPSCALER, sampling=False)
    p.set_defaults(func=cmd_upscale, option_notes=UPSCALE_NOTES)
