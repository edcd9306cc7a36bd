"""PNGs that say how they were made: a `parameters` text chunk (prompt, seed, steps, sampler,
guidance, model, blinkgen version) -- the convention other image tools read."""
from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from . import __version__


def torch_version() -> str | None:
    """The running torch's version (recorded in PNGs: another torch may round differently)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # pragma: no cover - torch is a dependency
        return None


def parameters_text(params: dict) -> str:
    """The `parameters` chunk: params + the LoRA adapter's hash (lora_record) + the
    blinkgen and torch versions, as sorted JSON (ASCII, so it is always a plain tEXt chunk that any
    PNG reader shows)."""
    return json.dumps({**params, **lora_record(params), "blinkgen_version": __version__,
                       "torch_version": torch_version()}, sort_keys=True)


def lora_record(params: dict) -> dict:
    """{"lora_hash": sha256} for the record of an image drawn with a LoRA adapter (its `lora`
    setting names the adapter folder) that does not carry the hash yet, else {}: the adapter as it
    is now, its weights and the adapter_config.json fields that change its output
    (train/lora_hash.adapter_sha256 -- the merge that drew the image is keyed by the same hash), so
    `generate --from` can tell that the adapter at that path has changed since
    (replay.check_model), as `model_hash` does for the model. Every writer gets it here."""
    folder = params.get("lora")
    if not isinstance(folder, str) or not folder or "lora_hash" in params:
        return {}
    from .train.lora_hash import adapter_sha256

    return {"lora_hash": adapter_sha256(folder)}


EDIT_KINDS = ("img2img", "inpaint", "variation")  # the `edit` key: what was done to a source image


def edit_record(kind: str, strength: float | None, has_mask: bool, init_image: str | None = None,
                mask: str | None = None) -> dict:
    """What an edited image's PNG records beside its generation parameters: the edit kind, the
    strength it ran at (the default when none was asked: sampling.edit.default_strength, so the
    record never depends on a default that may change), and the source image's and mask's file
    names where known (by name only, never a path). ValueError for a kind not in EDIT_KINDS."""
    from .sampling.edit import default_strength

    if kind not in EDIT_KINDS:
        raise ValueError(f"edit kind {kind!r} is not one of {EDIT_KINDS}")
    out = {"edit": kind, "strength": default_strength(strength, has_mask)}
    if init_image is not None:
        out["init_image"] = init_image
    if mask is not None:
        out["mask"] = mask
    return out


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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = b"parameters"


def text_chunk(data: bytes, keyword: bytes = KEYWORD) -> str | None:
    """The text of a PNG's first tEXt / zTXt / iTXt chunk named `keyword`, read from the chunk
    list (no pixel is decoded, so a huge or hostile image costs nothing); None if there is none.
    InputFileError when `data` is not a PNG or its chunk list is cut short."""
    import struct
    import zlib

    from .errors import InputFileError

    if not data.startswith(PNG_SIGNATURE):
        raise InputFileError("not a PNG file")
    i = len(PNG_SIGNATURE)
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + length]
        if len(body) < length:
            raise InputFileError("the PNG is truncated")
        i += 12 + length
        try:
            if kind == b"tEXt":
                key, _, text = body.partition(b"\0")
                if key == keyword:
                    return text.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                if key == keyword:
                    return zlib.decompressobj().decompress(rest[1:], 1 << 20).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                if key == keyword:
                    compressed, rest = rest[0], rest[2:]
                    _lang, _, rest = rest.partition(b"\0")
                    _tkey, _, text = rest.partition(b"\0")
                    if compressed:
                        text = zlib.decompressobj().decompress(text, 1 << 20)
                    return text.decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            raise InputFileError(f"the PNG's {keyword.decode()} chunk is corrupt") from None
        if kind == b"IEND":
            break
    return None


def parameters_from_bytes(data: bytes, name: str = "image") -> dict:
    """The `parameters` a blinkgen PNG records, as a dict. InputFileError (one line, naming the
    file) when it is not a PNG, has no parameters (not made by blinkgen, or stripped by an editor
    or a chat app) or they are not a JSON object."""
    from .errors import InputFileError

    try:
        text = text_chunk(data)
    except InputFileError as e:
        raise InputFileError(f"{name}: {e}") from None
    if text is None:
        raise InputFileError(f"{name} has no 'parameters' text chunk: it was not made by blinkgen, "
                             "or an editor or upload stripped its metadata")
    try:
        params = json.loads(text)
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise InputFileError(f"{name}: its 'parameters' chunk is not blinkgen's JSON")
    return params


def read_parameters(path) -> dict:
    """`parameters_from_bytes` of a PNG file (InputFileError when missing or unreadable)."""
    from .textio import read_bytes

    return parameters_from_bytes(read_bytes(path, "PNG"), str(path))


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
