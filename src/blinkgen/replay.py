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
them (torch version, device, network dtype). The first four are checked or restored; the rest
are recorded and named when a replay does not reproduce the pixels bit for bit.
"""
from __future__ import annotations

from dataclasses import fields

from . import __version__
from .errors import UserInputError
from .pipeline import Pipeline, Request, Settings

BASIC = ("steps", "guidance", "sampler")
# recorded keys that are neither settings nor request fields (no restore needed)
NOT_SETTINGS = frozenset({"prompt", "prompt_template", "seed", "seeds", "n", "model", "model_hash",
                          "variation_seed", "variation_strength", "blinkgen_version", "torch_version",
                          "dtype", "device", "grid"})


class ModelMismatchError(UserInputError):
    """The PNG was made by other weights than the model given for its replay."""


def read_png(path) -> dict:
    """The PNG's recorded parameters (pngmeta.read_parameters), with a one-line InputFileError
    when it has none, and a UserInputError when they lack a prompt or seed."""
    from .pngmeta import read_parameters

    params = read_parameters(path)
    if "grid" in params:
        raise UserInputError(f"{path} is a parameter grid (blinkgen grid); rerun that command, or replay "
                             "one of its cells with generate")
    if not isinstance(params.get("prompt"), str) or ("seed" not in params and "seeds" not in params):
        raise UserInputError(f"{path}: its parameters have no prompt and seed to replay")
    return params


def model_for(params: dict) -> str:
    """The model to load for a replay when the user names none: the recorded name if it is an
    embedded model or an existing folder; UserInputError otherwise (folders are recorded by
    name only, never by path, so the user must point at it)."""
    from .api import resolve
    from .errors import ModelLoadError

    name = params.get("model")
    if not isinstance(name, str) or not name:
        raise UserInputError("the PNG does not name its model; pass --model")
    try:
        resolve(name)
    except ModelLoadError:
        raise UserInputError(f"the PNG was made by a model named {name!r}, which is neither an embedded "
                             "model nor a folder here; pass --model FOLDER (its weights are checked "
                             "against the PNG's model_hash)") from None
    return name


def check_model(params: dict, pipe: Pipeline, png_name: str = "the PNG") -> str | None:
    """ModelMismatchError when the PNG records a model_hash and `pipe` has other weights. Returns
    a warning (str) when the PNG records no hash (made before blinkgen recorded one), else None."""
    want, have = params.get("model_hash"), getattr(pipe, "model_hash", None)
    if not want:
        return (f"{png_name} records no model_hash (made by an older blinkgen): cannot check that "
                f"{pipe.name} is the model that made it")
    if have != want:
        raise ModelMismatchError(
            f"{png_name} was made by model {params.get('model')!r} with weights {want[:12]}..., but "
            f"{pipe.name!r} has weights {str(have)[:12]}...: a different model (or checkpoint) would "
            "not reproduce it; pass the model that made it with --model, or --any-model to reuse "
            "its settings with this one")
    return None


def settings_kwargs(params: dict, pipe: Pipeline) -> dict:
    """The recorded settings this pipeline's family has, as keyword arguments of
    `pipe.settings(...)`; settings the PNG does not record get explicit "off" values where the
    model's default would differ from what made the PNG (style "none", negative prompt none).
    UserInputError names recorded settings that the family does not know."""
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
    settings = pipe.settings(*(kw.pop(k, None) for k in BASIC), **kw)
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
    pixels differ and what in the environment differs (or that nothing recorded does)."""
    px = pixel_difference(original, image)
    if px is None:
        return None
    env = environment_differences(params, pipe)
    why = "; ".join(env) if env else ("same weights, settings, blinkgen, torch, dtype and device: "
                                      "the CPU's arithmetic (threads, instruction set) differs")
    return f"not reproduced bit for bit: {px} ({why})"


def grid_seeds(params: dict) -> list[int] | None:
    """The seeds of a `--grid` PNG (several images in one), else None."""
    seeds = params.get("seeds")
    return [int(s) for s in seeds] if isinstance(seeds, list) and seeds else None
