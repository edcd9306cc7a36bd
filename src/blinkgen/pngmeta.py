"""PNGs that say how they were made: a `parameters` text chunk (prompt, seed, steps, sampler,
guidance, model, blinkgen version) -- the convention other image tools read."""
from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from . import __version__


def parameters_text(params: dict) -> str:
    return json.dumps({**params, "blinkgen_version": __version__}, sort_keys=True)


def png_bytes(image: Image.Image, parameters: dict) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters_text(parameters))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(image: Image.Image, path, parameters: dict, overwrite: bool = False) -> None:
    """Write the PNG; an existing file is replaced only with overwrite=True (else
    OutputExistsError, see blinkgen.outputs)."""
    from .outputs import write_bytes

    write_bytes(path, png_bytes(image, parameters), overwrite)


def read_parameters(path) -> dict:
    with Image.open(path) as im:
        return json.loads(im.text["parameters"])


def grid(images: list[Image.Image], cols: int | None = None, pad: int = 2) -> Image.Image:
    import math

    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    w, h = images[0].size
    g = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, im in enumerate(images):
        g.paste(im, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return g
