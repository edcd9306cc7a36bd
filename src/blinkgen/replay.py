"""Replay from a PNG: every blinkgen PNG records how it was made (pngmeta: prompt, seed, settings,
model name and `model_hash`, versions); this module turns that record back into a pipeline call,
checks that the model is the same one, and says exactly what differs when the bytes do not match.

    params = read_png("a.png")
    pipe = blinkgen.load(model_for(params))           # or a model folder the user names
    check_model(params, pipe, "a.png")                # ModelMismatchError if the weights differ
    req, settings = request_and_settings(params, pipe)
    image = pipe.sample([req], settings).images[0]
    difference("a.png", image, params, pipe)          # None when the pixels are identical

A PNG's pixels are a function of (weights, prompt, seed, settings) plus the arithmetic that ran
them (torch version, device, network dtype). The first four are checked or restored -- the
weights by `model_hash`, and a LoRA adapter (the `lora` setting) by `lora_hash` (its weights and
the config fields that change its output: train/lora_hash.py; a PNG from an older blinkgen records
the weights alone, and still replays); the rest are recorded and named when a replay does not
reproduce the pixels bit for bit.
"""
from __future__ import annotations

from dataclasses import fields

from . import __version__
from .errors import UserInputError
from .pipeline import Pipeline, Request, Settings

BASIC = ("steps", "guidance", "sampler")

# Every key a blinkgen writer records besides the family's settings (which settings_kwargs
# restores), by its role in a replay. A writer that records a new key must give it a role here:
# tests/unit/test_replay_records.py runs every writer and fails on a key with none.
KEY_ROLES = {
    **dict.fromkeys(("prompt", "prompt_template", "seed", "seeds", "n", "prompts", "variation_seed",
                     "variation_strength"), "request"),  # restored by generate --from
    **dict.fromkeys(("model", "model_hash", "lora_hash", "blinkgen_version", "torch_version", "dtype",
                     "device"), "provenance"),  # checked (check_model) or named when pixels differ
    **dict.fromkeys(("size", "upscaler"), "output"),  # generate options: restored (generate_options)
    **dict.fromkeys(("edit", "init_image", "mask", "strength", "caption_score"),
                    "edit"),  # an edit or upscale of a source image: refused, with its redo command
    "grid": "grid",  # a `blinkgen grid` comparison: refused
}
NOT_SETTINGS = frozenset(KEY_ROLES)  # recorded keys that are not settings fields
REDO_FLAGS = ("strength", "seed", "steps", "guidance", "sampler", "style", "lora", "lora_scale", "model",
              "dtype")  # edit/vary flags, by API name (lora_scale: --lora-scale)


class ModelMismatchError(UserInputError):
    """The PNG was made by other weights than the model given for its replay."""


class NotAGenerationError(UserInputError):
    """The PNG records something other than a generation (an edit, an upscale, a parameter grid):
    there is no prompt-and-seed recipe to replay, so `vary` varies it by img2img instead."""


def read_png(path) -> dict:
    """The PNG's recorded parameters (pngmeta.read_parameters) when they are a generation to
    replay. Raises InputFileError (one line) when it has none, NotAGenerationError when they
    record an edit, upscale or grid (check_record), UserInputError when they lack a prompt or seed."""
    from .pngmeta import read_parameters

    params = read_parameters(path)
    check_record(params, str(path))
    return params


def check_record(params: dict, png_name: str = "the PNG") -> None:
    """Refuse a record that is not a generation: NotAGenerationError naming the command that
    redoes it (a grid, an edit of a source image, an upscale); UserInputError when it has no
    prompt and seed."""
    if "grid" in params:
        raise NotAGenerationError(f"{png_name} is a parameter grid (blinkgen grid); rerun that command, or "
                                  "replay one of its cells with generate")
    if "edit" in params or "init_image" in params:
        raise NotAGenerationError(edit_message(params, png_name))
    if not isinstance(params.get("prompt"), str) or ("seed" not in params and "seeds" not in params):
        raise UserInputError(f"{png_name}: its parameters have no prompt and seed to replay")


def edit_message(params: dict, png_name: str = "the PNG") -> str:
    """One line: what the record of an edited (or upscaled) image says was done to which source
    image, and the command that redoes it (redo_command)."""
    what = {"img2img": "img2img edit", "inpaint": "inpainting edit", "variation": "img2img variation"}.get(
        params.get("edit"), "upscale" if "edit" not in params else f"{params['edit']} edit")
    src = params.get("init_image")
    of = f"{src} (its source image)" if src else "a source image it does not name"
    where = " (the record keeps its file name only: give its path)" if src else ""
    return (f"{png_name} records an {what} of {of}, not a generation to replay; redo it from the source "
            f"image{where} with: {redo_command(params)}")


def redo_command(params: dict) -> str:
    """The shell command (`blinkgen edit | vary | upscale`) that redoes a recorded edit or upscale
    from its source image (SOURCE.png / MASK.png where the record does not name them)."""
    import shlex

    src, kind = params.get("init_image") or "SOURCE.png", params.get("edit")
    if kind is None:
        model = ["--model", str(params["model"])] if "model" in params else []
        return shlex.join(["blinkgen", "upscale", src, *model])
    if kind == "variation":
        argv = ["blinkgen", "vary", src, "--prompt", str(params.get("prompt", "")), "-n", "1"]
    else:
        argv = ["blinkgen", "edit", src, str(params.get("prompt", ""))]
        if kind == "inpaint":
            argv += ["--mask", str(params.get("mask") or "MASK.png")]
    for k in REDO_FLAGS:
        if params.get(k) is not None:
            argv += [f"--{k.replace('_', '-')}", str(params[k])]
    return shlex.join(argv)


def generate_options(params: dict) -> dict:
    """The generate options a record restores besides its settings: {"size", "upscaler"} for an
    image made at --size through an upscaler, else {}. The upscaler is its recorded name: give
    it to upscaler_for when the user names none. UserInputError when they are malformed."""
    if "size" not in params and "upscaler" not in params:
        return {}
    size, up = params.get("size"), params.get("upscaler")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or not isinstance(up, str) or not up:
        raise UserInputError(f"the PNG records size {size!r} and upscaler {up!r}: not a blinkgen record")
    return {"size": size, "upscaler": up}


def upscaler_for(params: dict) -> str:
    """The upscaler to load for a replay of a --size PNG when the user names none: its recorded
    name if it is an embedded model or an existing folder; UserInputError otherwise (or when the
    record has no upscaler: generate_options)."""
    name = generate_options(params).get("upscaler")
    if name is None:
        raise UserInputError("the PNG was not made through an upscaler (it records no --size)")
    return _findable(name, "upscaled by a model", "--upscaler FOLDER")


def model_for(params: dict) -> str:
    """The model to load for a replay when the user names none: the recorded name if it is an
    embedded model or an existing folder; UserInputError otherwise (folders are recorded by
    name only, never by path, so the user must point at it)."""
    name = params.get("model")
    if not isinstance(name, str) or not name:
        raise UserInputError("the PNG does not name its model; pass --model")
    return _findable(name, "made by a model", "--model FOLDER (its weights are checked against the PNG's "
                     "model_hash)")


def _findable(name: str, what: str, flag: str) -> str:
    """`name` when it is an embedded model or a folder here (api.resolve), else UserInputError
    saying the PNG was `what` of that name and to pass `flag`."""
    from .api import resolve
    from .errors import ModelLoadError

    try:
        resolve(name)
    except ModelLoadError:
        raise UserInputError(f"the PNG was {what} named {name!r}, which is neither an embedded model nor a "
                             f"folder here; pass {flag}") from None
    return name


def check_model(params: dict, pipe: Pipeline, png_name: str = "the PNG", check_adapter: bool = True) -> str | None:
    """ModelMismatchError when the PNG records a model_hash and `pipe` has other weights, or (with
    check_adapter; False when the replay draws with another adapter, --lora) a lora_hash and the
    LoRA adapter at its recorded folder has changed since (adapter_change). Returns a warning (str)
    when the PNG records no model_hash (made before blinkgen recorded one), else None. A PNG with
    an adapter but no lora_hash (an older blinkgen) replays unchecked."""
    want, have = params.get("model_hash"), getattr(pipe, "model_hash", None)
    if want and have != want:
        raise ModelMismatchError(
            f"{png_name} was made by model {params.get('model')!r} with weights {want[:12]}..., but "
            f"{pipe.name!r} has weights {str(have)[:12]}...: a different model (or checkpoint) would "
            "not reproduce it; pass the model that made it with --model, or --any-model to reuse "
            "its settings with this one")
    changed = adapter_change(params) if check_adapter else None
    if changed:
        folder, then, now = changed
        raise ModelMismatchError(
            f"{png_name} was made with the LoRA adapter at {folder} when its hash was {then[:12]}..., "
            f"but that adapter has changed since the image was made (its hash is now {now[:12]}...: "
            "trained again or resumed into the same folder, or its adapter_config.json edited), so it "
            "would not reproduce it; pass --any-model to draw it with the adapter as it is now")
    if not want:
        return (f"{png_name} records no model_hash (made by an older blinkgen): cannot check that "
                f"{pipe.name} is the model that made it")
    return None


def adapter_change(params: dict) -> tuple[str, str, str] | None:
    """(adapter folder, recorded hash, current hash) when the PNG records a LoRA adapter with its
    hash (`lora`, `lora_hash`: pngmeta.lora_record) and the adapter in that folder no longer matches
    it (train/lora_hash.recorded_matches: the hash of its weights and output-changing config, or of
    its weights alone for a PNG of an older blinkgen); None when it matches, when the record has
    no hash (an older blinkgen still), or when the folder no longer holds an adapter (restoring the
    lora setting says so, one line)."""
    from .errors import ModelLoadError
    from .train.lora_hash import adapter_sha256, recorded_matches

    folder, then = params.get("lora"), params.get("lora_hash")
    if not isinstance(folder, str) or not folder or not isinstance(then, str) or not then:
        return None
    try:
        if recorded_matches(then, folder):
            return None
        return folder, then, adapter_sha256(folder)
    except (ModelLoadError, OSError):
        return None


# generate's replayed flags that name a recorded value plainly (their argparse dest; the record's
# key is the same but for --negative): given with the recorded value they are no change, so the
# bit-for-bit check still runs
_SCALAR_FLAGS = frozenset({"seed", "steps", "guidance", "sampler", "style", "negative", "cache", "truncation",
                           "temperature", "variation_seed", "variation_strength", "dtype", "size", "prompt"})


def same_as_recorded(flag: str, given, params: dict) -> bool:
    """True when generate's flag `flag` (its argparse dest) was given with the value the PNG's
    record `params` holds: numbers compared as numbers (--guidance 3 is the recorded 3.0), text as
    text; a grid's seed is its first. False for a flag without a plain recorded value (it counts as
    a change, as before)."""
    if flag not in _SCALAR_FLAGS or given is None:
        return False
    key = "negative_prompt" if flag == "negative" else flag
    then = params.get(key)
    if key == "seed" and isinstance(params.get("seeds"), list) and params["seeds"]:
        then = params["seeds"][0]
    if key == "dtype" and then is None:
        then = "fp32"  # not recorded when it is the default
    if then is None or isinstance(then, (list, dict)):
        return False
    if isinstance(then, bool) or isinstance(given, bool):
        return then is given
    if isinstance(then, (int, float)):
        try:
            return float(given) == float(then)
        except (TypeError, ValueError):
            return False
    if key == "style":  # style names match in any case
        from .text.style import style_key

        return style_key(str(given)) == style_key(str(then))
    return str(given) == str(then)


def adapter_overrides(params: dict, settings: Settings) -> list[str]:
    """The adapter settings of a replay (`settings`) that differ from the PNG's record, as the
    names generate lists among its changes: "lora" when it draws with another adapter than the
    record's (compared by the recorded lora_hash where there is one, so the same adapter in another
    folder is no change; else by folder), or adds or drops one; "lora_scale" when it keeps an
    adapter at another strength. [] when both are as recorded."""
    from .errors import ModelLoadError
    from .train.lora_hash import recorded_matches

    then, now = params.get("lora"), getattr(settings, "lora", None)
    if then is None and now is None:
        return []
    if then is None or now is None:
        return ["lora"]
    out = []
    recorded = params.get("lora_hash")
    try:
        same = recorded_matches(recorded, now) if isinstance(recorded, str) and recorded else str(then) == str(now)
    except (ModelLoadError, OSError):
        same = False
    if not same:
        out.append("lora")
    scale = params.get("lora_scale", 1.0)  # recorded with every adapter; 1 is its default
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or float(scale) != settings.lora_scale:
        out.append("lora_scale")
    return out


def weights_differences(params: dict, pipe: Pipeline) -> list[str]:
    """What differs in the weights that drew the PNG and this replay (reached with --any-model,
    which skips check_model): the model's weights, a LoRA adapter changed since in its folder; and
    an adapter the PNG does not record a hash of, which could not be checked."""
    out = []
    want, have = params.get("model_hash"), getattr(pipe, "model_hash", None)
    if want and have and want != have:
        out.append(f"model weights {want[:12]}... then, {have[:12]}... now ({pipe.name})")
    changed = adapter_change(params)
    if changed:
        folder, then, now = changed
        out.append(f"the LoRA adapter at {folder} has changed since the image was made: hash "
                   f"{then[:12]}... then, {now[:12]}... now")
    elif isinstance(params.get("lora"), str) and not params.get("lora_hash"):
        out.append(f"the LoRA adapter at {params['lora']} is not checked: the PNG records no lora_hash (made "
                   "by an older blinkgen), and it may have changed since")
    return out


def settings_kwargs(params: dict, pipe: Pipeline) -> dict:
    """The recorded settings this pipeline's family has, as keyword arguments of
    `pipe.settings(...)`; settings the PNG does not record get explicit "off" values where the
    model's default would differ from what made the PNG (style "none", negative prompt none).
    Raises NotAGenerationError for a record that is not a generation (check_record), and
    UserInputError naming recorded keys that are neither in KEY_ROLES nor the family's settings."""
    check_record(params)
    known = {f.name for f in fields(pipe.settings_type)}
    out = {k: v for k, v in params.items() if k in known}
    unknown = sorted(k for k in params if k not in known and k not in NOT_SETTINGS)
    if unknown:
        raise UserInputError(f"the PNG records settings the {pipe.family} family does not have: "
                             f"{', '.join(unknown)}")
    if "style" in known and "style" not in out:
        out["style"] = "none"  # recorded only when set: absent means the PNG had no style phrase
    if "guidance_interval" in known and "guidance_interval" not in out:
        out["guidance_interval"] = (0.0, 1.0)  # absent means "guided at every step"
    return out


def request_and_settings(params: dict, pipe: Pipeline, seed: int | None = None) -> tuple[Request, Settings]:
    """The Request and Settings that remake the PNG's image (seed: one of a grid's seeds)."""
    kw = settings_kwargs(params, pipe)
    basic = [kw.pop(k, None) for k in BASIC]  # popped before **kw is unpacked (a generator would be too late)
    settings = pipe.settings(*basic, **kw)
    req = Request(params["prompt"], params["seed"] if seed is None else seed,
                  variation_seed=params.get("variation_seed"), variation_strength=params.get("variation_strength"))
    return req.check(), settings


def environment_differences(params: dict, pipe: Pipeline) -> list[str]:
    """What differs between the run that made the PNG and this one, besides weights and settings
    (blinkgen and torch versions, network dtype, device): the usual reasons a replay differs."""
    from .pngmeta import torch_version

    now = {"blinkgen_version": __version__, "torch_version": torch_version(),
           "dtype": "fp32", "device": "cpu", **pipe.run_environment()}
    then = {"dtype": "fp32", "device": "cpu", **{k: params.get(k) for k in ("blinkgen_version", "torch_version",
                                                                          "dtype", "device") if k in params}}
    return [f"{k.replace('_', ' ')} {then[k]} then, {now[k]} now" for k in then if then[k] != now.get(k)]


def pixel_difference(original, image) -> str | None:
    """None when two images have identical pixels, else a one-line summary (size, or how many
    pixels differ and by how much at most on the 0-255 scale). original: a path or image,
    read through the one image reader."""
    import numpy as np

    from .data.image_io import read_image

    a = np.asarray(read_image(original)).astype(np.int16)
    b = np.asarray(read_image(image)).astype(np.int16)
    if a.shape != b.shape:
        return f"size {a.shape[1]}x{a.shape[0]} then, {b.shape[1]}x{b.shape[0]} now"
    d = np.abs(a - b)
    if not d.any():
        return None
    px = int(d.any(axis=-1).sum())
    return f"{px} of {a.shape[0] * a.shape[1]} pixels differ, by up to {int(d.max())}/255"


def difference(original, image, params: dict, pipe: Pipeline) -> str | None:
    """None when `image` reproduces `original` bit for bit (pixels), else one line saying how the
    pixels differ and what in the weights (weights_differences) or the environment differs (or that
    nothing recorded does); a size that differs from a record made at --size names that option
    (generate_options)."""
    px = pixel_difference(original, image)
    if px is None:
        return None
    opts = generate_options(params)
    env = [f"made at --size {opts['size']} through {opts['upscaler']}"] if opts and px.startswith("size") else []
    env += weights_differences(params, pipe) + environment_differences(params, pipe)
    why = "; ".join(env) if env else ("same weights, settings, blinkgen, torch, dtype and device: "
                                      "the CPU's arithmetic (threads, instruction set) differs")
    return f"not reproduced bit for bit: {px} ({why})"


def grid_seeds(params: dict) -> list[int] | None:
    """The seeds of a `--grid` PNG (several images in one), else None."""
    seeds = params.get("seeds")
    return [int(s) for s in seeds] if isinstance(seeds, list) and seeds else None
