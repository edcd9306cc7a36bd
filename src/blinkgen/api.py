"""The front door: `blinkgen.load(name_or_path) -> Pipeline`.

A model is a folder (config.json + *.safetensors) whose config names its family; the family
registry (`blinkgen.families`) maps that name to the family's pipeline class. Every family
implements the same contract (`blinkgen.pipeline.Pipeline`), so the CLI, the server, the
evaluator and the benchmarks never special-case a family.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from . import families
from .errors import ModelLoadError
from .pipeline import MAX_N, MAX_PROMPT_CHARS, SEED_MAX, Pipeline, ProgressCallback, Request, SampleResult, Settings

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"

__all__ = ["load", "load_upscaler", "upscale", "resolve", "embedded_models", "WEIGHTS_DIR", "Pipeline", "Request", "Settings", "SampleResult",
           "ProgressCallback", "MAX_N", "MAX_PROMPT_CHARS", "SEED_MAX"]


def __getattr__(name: str):
    """Deprecated names kept for callers of the old API: Generator is Pipeline, SampleSettings is
    Settings."""
    old = {"Generator": Pipeline, "SampleSettings": Settings}
    if name in old:
        warnings.warn(f"blinkgen.api.{name} is deprecated; use blinkgen.pipeline.{old[name].__name__}",
                      DeprecationWarning, stacklevel=2)
        return old[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve(name_or_path: str) -> Path:
    """An embedded model name ("default", ...) or a folder path -> the folder; ModelLoadError if neither."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    embedded = WEIGHTS_DIR / name_or_path
    if "/" not in name_or_path and embedded.is_dir():
        return embedded
    names = embedded_models()  # the list `blinkgen models` prints (the evaluator and captioner are not generators)
    raise ModelLoadError(f"no model named {name_or_path!r}: not a folder, and the embedded models are "
                         f"{', '.join(names) or 'none'} (blinkgen models)")


def embedded_models() -> list[str]:
    """The embedded generators (folders under weights/ whose config names a registered family);
    the contrastive evaluator lives there too but generates nothing, so it is not listed."""
    if not WEIGHTS_DIR.is_dir():
        return []
    known = set(families.names())
    out = []
    for d in WEIGHTS_DIR.iterdir():
        try:
            if json.loads((d / "config.json").read_text()).get("family") in known:
                out.append(d.name)
        except (OSError, ValueError):
            continue
    return sorted(out)


def load(name_or_path: str = "default", device: str = "cpu", dtype: str = "fp32") -> Pipeline:
    """An embedded model name or a model folder -> its family's Pipeline on `device`, with the
    network in `dtype` ("fp32" | "bf16" | "fp16"). ModelLoadError for a missing, incomplete or
    corrupt folder, or one whose config names no registered family; UserInputError for a
    device this torch cannot use (checks.check_device)."""
    from .checks import check_device
    from .modelio import read_config, weights_hash

    check_device(device)
    folder = resolve(name_or_path)
    cfg = read_config(folder)
    family = cfg.get("family")
    if family == "lora":  # an adapter folder (train/lora.py) is not a model on its own
        raise ModelLoadError(f"{folder} is a LoRA adapter of {cfg.get('base', {}).get('name')!r}, not a model: "
                             f"load that model and pass lora={str(folder)!r} (CLI: --lora {folder})")
    if family not in families.names():
        raise ModelLoadError(f"{folder}/config.json names family {family!r}; known: {sorted(families.names())}")
    pipe = families.get(family).load(folder, device=device, dtype=dtype)
    if folder.parent == WEIGHTS_DIR:
        pipe.name = folder.name
    pipe.model_hash = weights_hash(folder)  # recorded in every PNG (pipeline.png_parameters)
    return pipe


def load_upscaler(name_or_path: str = "upscaler", input_size: int | None = None, output_size: int | None = None,
                  device: str = "cpu") -> Pipeline:
    """An upscaler model (the embedded "upscaler", or a folder) -> its Pipeline, checked to take
    `input_size`-px images and give `output_size`-px ones when those are given (UserInputError
    naming the sizes it does map, or ModelLoadError if it is not an upscaler)."""
    from .errors import UserInputError

    up = load(name_or_path, device=device)
    if "init_image" not in up.requires:
        raise ModelLoadError(f"{name_or_path} is a {up.family} model, not an upscaler")
    have = (getattr(up, "input_size", None), up.image_size)
    if (input_size is not None and have[0] != input_size) or (output_size is not None and have[1] != output_size):
        fits = f"{input_size} or {have[1]}" if have[0] == input_size else f"{input_size}"
        raise UserInputError(f"--size {output_size}: the model draws {input_size}-px images and the upscaler "
                             f"{up.name!r} maps {have[0]} -> {have[1]} px, so --size takes {fits} with it")
    return up


def upscale(images, upscaler: "str | Pipeline" = "upscaler") -> list:
    """Upscale images (PIL images, arrays, paths: anything the one image reader takes) with an
    upscaler model (a loaded Pipeline, an embedded name or a folder) -> a list of PIL images."""
    up = upscaler if isinstance(upscaler, Pipeline) else load_upscaler(upscaler)
    return up.sample([Request("upscale", 0, init_image=im) for im in images], up.settings()).images
