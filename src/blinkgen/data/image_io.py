"""The one image reader: every path that takes a user's picture (dataset folders, `caption`,
eval, the Python API, and uploads/edits to come) turns it into pixels here, so a picture means the
same thing everywhere.

`read_image(source)` -> an upright RGB PIL image:
- sources: a file path, bytes (an upload), a PIL image, or an array (H, W), (H, W, 1|3|4);
- only raster formats that carry pictures are decoded (PNG, JPEG, WebP, GIF, BMP, TIFF): a
  file named .png that is really EPS would otherwise make Pillow run Ghostscript. Their file
  extensions are `IMAGE_EXTENSIONS`, the one list every folder scan uses;
- size limits come from the header, before any pixel is decoded: at most `max_side` pixels a
  side and `max_pixels` in all (a 45-byte PNG can claim 20000x20000 and would cost 1.6 GB), and
  at most `max_bytes` of input (uploads and files alike);
- EXIF orientation is applied (phone photos store rotation there, not in the pixels);
- every mode and bit depth becomes 8-bit RGB: 16-bit greyscale (I;16*, I) is scaled by 257 so it
  reads exactly as its 8-bit copy (Pillow's own convert clips it to white); float (F) greyscale
  in [0, 1] or [0, 255]; CMYK, YCbCr, L, 1, P;
- transparency (alpha channels, palette and colour-key transparency) is composited on white:
  icons and emoji are drawn for a light background, and black would invent dark halos;
- animated images give their first frame.
Any failure raises `ImageReadError` (a BlinkgenError: one line, exit 2, HTTP 400) whose `reason`
is one of the stable strings below; the dataset loader uses it as the skip reason.

`read_mask(source)` reads a mask the same way (formats, limits, EXIF) but keeps what marks the
area to repaint: transparency (OpenAI's convention: transparent = repaint) or, in a mask without
any, white = repaint; it returns an "L" image, 255 = repaint (`to_mask`).

`to_rgb_square(im, size)` pads to a square on white and resizes (the training geometry);
`to_tensor` gives (3, H, W) uint8.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from blinkgen.errors import ImageReadError

WHITE = (255, 255, 255)
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens phones' MPO files
# The file-name extensions (lower case) of FORMATS, as Pillow registers them: what a folder listing
# takes for a picture (the dataset loader). The reader itself goes by content, never by name.
IMAGE_EXTENSIONS = (".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# A side over 8192 px is almost certainly a scan or a hostile header; 8192^2 RGBA is 256 MB decoded.
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 8192
MAX_BYTES = 64 * 2**20  # an upload or file over 64 MB is not an icon-sized picture

# Reasons (stable strings: users grep for them in dataset reports, tests check them).
UNREADABLE = "unreadable or corrupt image"
NOT_FOUND = "image file not found"
BOMB = "decompression bomb"
TOO_MANY_BYTES = "file too large"


def too_small(min_side: int) -> str:
    return f"too small (< {min_side} px)"


def too_large(max_side: int) -> str:
    return f"too large (> {max_side} px)"


TOO_LARGE = too_large(MAX_SIDE)


_WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _fail(name: str, reason: str, detail: str = "") -> ImageReadError:
    return ImageReadError(f"cannot use {name} as an image: {reason}" + (f" ({detail})" if detail else ""), reason)


def grey_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale -> "L". Fixed scales, never stretched to the image's own
    maximum (a dark 16-bit picture stays dark): I;16* -> value / 257; I -> value / 257 when any
    value is above 255 (the 16-bit range, how older Pillow reads 16-bit PNGs), else as is;
    F -> value * 255 when every value is within [0, 1], else as is. Results are rounded, clipped."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16") or (im.mode == "I" and a.size and a.max() > 255):
        a = a / 257.0
    elif im.mode == "F" and a.size and np.nanmin(a) >= 0.0 and np.nanmax(a) <= 1.0:
        a = a * 255.0
    return Image.fromarray(np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image -> RGB, with transparency composited on white (see the module doc)."""
    if im.mode in _WIDE_GREY:
        im = grey_to_8bit(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX
    except (ValueError, OSError) as e:  # LAB, HSV, multi-band TIFFs Pillow cannot convert
        raise _fail("this image", UNREADABLE, f"colour mode {im.mode} is not supported: {e}") from None


def _from_array(a) -> Image.Image:
    """(H, W), (H, W, 1|3|4) or (1|3|4, H, W) array -> PIL. uint8 as is; uint16 / 257; bool 0/255;
    float in [0, 1] (scaled by 255) or [0, 255]. Anything else is refused."""
    if hasattr(a, "detach"):  # a torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))) or 0 in a.shape:
        raise _fail("this array", UNREADABLE, f"expected (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.rint(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise _fail("this array", UNREADABLE, "it holds NaN or infinite values")
        scale = 255.0 if a.min() >= 0.0 and a.max() <= 1.0 else 1.0
        a = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 255:
            raise _fail("this array", UNREADABLE, f"dtype {a.dtype} is not uint8, uint16, bool or float")
        a = a.astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a), "L" if a.ndim == 2 else ("RGB" if a.shape[-1] == 3 else "RGBA"))


def _check_size(name: str, size: tuple[int, int], max_side: int, max_pixels: int, min_side: int | None) -> None:
    w, h = size
    if min_side is not None and min(w, h) < min_side:
        raise _fail(name, too_small(min_side), f"{w}x{h}")
    if max(w, h) > max_side:
        raise _fail(name, too_large(max_side), f"{w}x{h}")
    if w * h > max_pixels:
        raise _fail(name, BOMB, f"{w}x{h} is over {max_pixels} pixels")


def _decode(fp, name: str, max_side: int, max_pixels: int, min_side: int | None, convert=to_rgb) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp, formats=FORMATS) as im:
                _check_size(name, im.size, max_side, max_pixels, min_side)  # header only: no pixels yet
                im.seek(0)  # animated GIF/WebP: the first frame
                im.load()
                try:
                    im = ImageOps.exif_transpose(im)
                except (ValueError, TypeError, KeyError, OSError, SyntaxError):  # a broken EXIF block
                    pass
                return convert(im)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _fail(name, BOMB, str(e)) from None
    except Image.UnidentifiedImageError:
        raise _fail(name, UNREADABLE, f"not a {'/'.join(FORMATS)} image") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:  # truncated, corrupt
        raise _fail(name, UNREADABLE, str(e) or type(e).__name__) from None


def read_image(source, *, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_BYTES, min_side: int | None = None, name: str | None = None,
               convert=to_rgb) -> Image.Image:
    """A user's picture -> upright RGB PIL image (see the module doc).

    source: path (str / PathLike), bytes / bytearray / memoryview (an upload), PIL image, or
    numpy/torch array. name: how messages call it (default: the path, or "the upload").
    convert: what the decoded, upright image becomes (default `to_rgb`; `read_mask` passes
    `to_mask`).
    Raises ImageReadError (reason: NOT_FOUND, UNREADABLE, TOO_LARGE, BOMB, TOO_MANY_BYTES or
    too_small(min_side))."""
    if isinstance(source, Image.Image):
        label = name or "this image"
        _check_size(label, source.size, max_side, max_pixels, min_side)
        try:
            im = ImageOps.exif_transpose(source)
        except (ValueError, TypeError, KeyError, OSError, SyntaxError):
            im = source
        return convert(im)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "the upload"
        if len(source) > max_bytes:
            raise _fail(label, TOO_MANY_BYTES, f"{len(source)} bytes; the limit is {max_bytes}")
        return _decode(io.BytesIO(bytes(source)), label, max_side, max_pixels, min_side, convert)
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        label = name or str(p)
        try:
            nbytes = p.stat().st_size
        except FileNotFoundError:
            raise _fail(label, NOT_FOUND) from None
        except OSError as e:
            raise _fail(label, UNREADABLE, e.strerror or str(e)) from None
        if not p.is_file():
            raise _fail(label, UNREADABLE, "a folder, not an image file" if p.is_dir() else "not a regular file")
        if nbytes > max_bytes:
            raise _fail(label, TOO_MANY_BYTES, f"{nbytes} bytes; the limit is {max_bytes}")
        return _decode(p, label, max_side, max_pixels, min_side, convert)
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        im = _from_array(source)
        _check_size(name or "this array", im.size, max_side, max_pixels, min_side)
        return convert(im)
    raise ImageReadError(f"expected an image path, bytes, a PIL image or an array, got {type(source).__name__}",
                         UNREADABLE)


def to_mask(im: Image.Image) -> Image.Image:
    """A mask image -> "L", 255 = repaint, 0 = keep. The one rule for every caller (CLI --mask,
    Request.mask, uploads): an image with transparency -- an alpha channel that is not fully
    opaque, or palette / colour-key transparency -- follows OpenAI's convention: transparent
    pixels are repainted, opaque ones kept, partly transparent ones in proportion (255 - alpha).
    An image without any (or fully opaque): its luminance, white = repaint, black = keep.
    16-bit and float greyscale are scaled as `grey_to_8bit`."""
    if im.mode in _WIDE_GREY:
        im = grey_to_8bit(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        alpha = im.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha.point(lambda a: 255 - a)
    try:
        return im.convert("L")
    except (ValueError, OSError) as e:
        raise _fail("this mask", UNREADABLE, f"colour mode {im.mode} is not supported: {e}") from None


def read_mask(source, **limits) -> Image.Image:
    """A user's mask (path, bytes, PIL image or array; the same formats and limits as
    `read_image`) -> "L" image, 255 = repaint (`to_mask`'s convention). ImageReadError as
    `read_image`."""
    return read_image(source, **{"name": "the mask", **limits}, convert=to_mask)


def to_rgb_square(im: Image.Image, size: int) -> Image.Image:
    """Any Pillow image -> size x size RGB: colours as `to_rgb`, non-square images centre-padded
    on white so nothing is cropped or stretched, then resized with LANCZOS."""
    im = to_rgb(im)
    w, h = im.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        im = canvas
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    return im


def to_tensor(im: Image.Image):
    """RGB PIL image -> (3, H, W) uint8 torch tensor."""
    import torch

    return torch.from_numpy(np.asarray(to_rgb(im), dtype=np.uint8).copy()).permute(2, 0, 1)
