"""Issue 10, fault 2 and its kind: one image reader (blinkgen.data.image_io) behind every path
that takes a user's picture -- the dataset loader, `blinkgen caption`, eval's embedding of PIL
images and arrays, the shapes checker -- so a picture means the same pixels everywhere. Real
files written with Pillow, the real shipped evaluator, the real CLI in a subprocess."""
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image, ImageDraw

from blinkgen.data.folder import load_folder
from blinkgen.data.image_io import (BOMB, TOO_LARGE, TOO_MANY_BYTES, UNREADABLE, read_image, to_rgb,
                                    to_rgb_square)
from blinkgen.errors import ImageReadError
from conftest import run_cli

# EXIF orientation -> the transpose that stores an upright picture so that a viewer applying the
# tag shows it upright again (the inverse of what ImageOps.exif_transpose applies).
STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
         7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def hostile_png(w=20000, h=20000) -> bytes:
    """The filed input: a 45-byte PNG (signature, IHDR, IEND) whose header claims w x h pixels."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + _chunk(b"IEND", b"")


def dark_disc() -> np.ndarray:
    """A dark grey disc on white, 8-bit greyscale (64 x 64)."""
    im = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(im).ellipse((14, 14, 50, 50), fill=40)
    return np.asarray(im)


def left_of_scene() -> Image.Image:
    """A red circle left of a blue square, upright, on white."""
    im = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((4, 22, 24, 42), fill=(220, 20, 20))
    d.rectangle((38, 22, 58, 42), fill=(20, 40, 220))
    return im


def with_orientation(upright: Image.Image, orientation: int, path, fmt="PNG"):
    raw = upright if STORE[orientation] is None else upright.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw.save(path, format=fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))


# --- the three filed faults, through `blinkgen caption` ----------------------------------------

def test_caption_16bit_greyscale_reads_as_its_8bit_copy(tmp_path):
    from blinkgen.eval.caption import caption

    a8 = dark_disc()
    Image.fromarray(a8).save(tmp_path / "disc8.png")
    Image.fromarray(a8.astype(np.uint16) * 257).save(tmp_path / "disc16.png")  # the same picture, 16 bit
    assert Image.open(tmp_path / "disc16.png").mode.startswith("I")
    assert np.array_equal(np.asarray(read_image(tmp_path / "disc16.png")), np.asarray(read_image(tmp_path / "disc8.png")))
    assert caption(tmp_path / "disc16.png") == caption(tmp_path / "disc8.png")


def test_caption_applies_exif_orientation(tmp_path):
    from blinkgen.eval.caption import caption

    up = left_of_scene()
    up.save(tmp_path / "upright.png")
    with_orientation(up, 6, tmp_path / "phone.png")
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "phone.png").convert("RGB")), np.asarray(up))
    assert np.array_equal(np.asarray(read_image(tmp_path / "phone.png")), np.asarray(up))
    assert caption(tmp_path / "phone.png") == caption(tmp_path / "upright.png")


def test_caption_of_a_hostile_header_is_one_line_and_exit_2(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(hostile_png())
    assert len(bomb.read_bytes()) == 45
    r = run_cli("caption", bomb, check=False)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "bomb.png" in r.stderr and (TOO_LARGE in r.stderr or BOMB in r.stderr)


# --- the reader's rules -------------------------------------------------------------------------

def test_limits_are_checked_from_the_header(tmp_path):
    with pytest.raises(ImageReadError) as e:  # 400M pixels: Pillow's own bomb check fires first
        read_image(hostile_png())
    assert e.value.reason in (TOO_LARGE, BOMB)
    with pytest.raises(ImageReadError) as e:
        read_image(hostile_png(9000, 100))
    assert e.value.reason == TOO_LARGE
    with pytest.raises(ImageReadError) as e:                      # under the side cap, over the pixel cap
        read_image(hostile_png(8000, 8000), max_pixels=10_000)
    assert e.value.reason == BOMB
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    with pytest.raises(ImageReadError) as e:
        read_image(png.getvalue(), max_bytes=10)
    assert e.value.reason == TOO_MANY_BYTES
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_formats_that_are_not_pictures_are_refused(tmp_path):
    eps = tmp_path / "x.png"  # EPS content: Pillow would hand it to Ghostscript
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageReadError) as e:
        read_image(eps)
    assert e.value.reason == UNREADABLE


MODES = ["1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"]


def _image_in_mode(mode: str, grey: np.ndarray) -> tuple[Image.Image, str]:
    """An image of `grey` (uint8 H x W) in `mode`, and a file format that stores that mode."""
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257), "PNG"
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257), "TIFF"
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255.0), "TIFF"
    if mode == "P+transparency":
        return Image.fromarray(grey).convert("P"), "PNG"
    im = Image.fromarray(grey).convert(mode if mode != "YCbCr" else "RGB")
    return (im.convert("YCbCr"), "JPEG") if mode == "YCbCr" else (im, {"CMYK": "TIFF"}.get(mode, "PNG"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODES), st.integers(8, 40), st.integers(8, 40), st.integers(0, 2**32 - 1))
def test_every_mode_reads_as_rgb_of_the_same_picture(mode, w, h, seed):
    """Property: any mode or bit depth -> RGB of the same size; the greyscale modes (8, 16,
    32-bit int, float) give exactly the 8-bit picture's pixels."""
    grey = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    im, fmt = _image_in_mode(mode, grey)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"transparency": 0} if mode == "P+transparency" else {}))
    out = read_image(buf.getvalue())
    assert out.mode == "RGB" and out.size == (w, h)
    a = np.asarray(out)
    if mode in ("L", "I;16", "I", "F"):
        assert np.array_equal(a, np.repeat(grey[..., None], 3, axis=2))
    if mode == "P+transparency":  # palette index 0 is transparent: white there, the picture elsewhere
        idx = np.asarray(im)
        assert (a[idx == 0] == 255).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(8, 24), st.integers(8, 24), st.integers(0, 2**32 - 1),
       st.sampled_from(["PNG", "WEBP", "TIFF"]))
def test_every_exif_orientation_reads_upright(orientation, w, h, seed, fmt):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    up = Image.fromarray(rgb)
    buf = io.BytesIO()
    with_orientation(up, orientation, buf, fmt)
    assert np.array_equal(np.asarray(read_image(buf.getvalue())), rgb)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["RGBA", "LA"]))
def test_transparency_is_composited_on_white(seed, mode):
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, (12, 12, 3 if mode == "RGBA" else 1), dtype=np.uint8)
    alpha = rng.choice(np.array([0, 255], dtype=np.uint8), (12, 12, 1))
    im = Image.fromarray(np.concatenate([colour, alpha], axis=2).squeeze() if mode == "RGBA"
                         else np.concatenate([colour, alpha], axis=2), mode)
    a = np.asarray(read_image(im)).astype(int)
    want = np.where(alpha == 255, np.broadcast_to(colour, (12, 12, 3)), 255)
    assert np.array_equal(a, want)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_truncated_or_random_bytes_raise_only_image_read_error(data):
    """Property: cut a real PNG anywhere, or send any bytes -- a picture or ImageReadError,
    never another exception (the CLI would print a traceback, the server answer 500)."""
    buf = io.BytesIO()
    Image.fromarray(np.arange(768, dtype=np.uint8).reshape(16, 16, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    blob = data.draw(st.one_of(st.integers(0, len(png) - 1).map(lambda k: png[:k]), st.binary(max_size=200)))
    try:
        read_image(blob)
    except ImageReadError as e:
        assert e.reason in (UNREADABLE, TOO_LARGE, BOMB)


@pytest.mark.parametrize("array, want", [
    (np.full((4, 4), 40, np.uint8), 40),
    (np.full((4, 4), 40 * 257, np.uint16), 40),                 # 16-bit array
    (np.full((4, 4, 3), 40 / 255, np.float32), 40),             # float in [0, 1]
    (np.full((3, 5, 6), 40, np.uint8), 40),                     # channels first
    (np.ones((4, 4), bool), 255),
])
def test_arrays_of_every_depth(array, want):
    assert (np.asarray(read_image(array)) == want).all()


def test_bad_arrays_are_one_clear_error():
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(np.full((4, 4), np.nan))
    with pytest.raises(ImageReadError, match="shape"):
        read_image(np.zeros((5, 5, 2), np.uint8))


# --- the same reader everywhere -----------------------------------------------------------------

def test_dataset_loader_caption_and_eval_see_the_same_pixels(tmp_path):
    """The training folder, the Python captioner and the evaluator's embedding read one file
    (16-bit, rotated by EXIF, non-square) identically."""
    from blinkgen.eval.caption import _open_image
    from blinkgen.eval.contrastive import as_uint8_batch

    up = Image.fromarray(np.repeat(dark_disc()[:, 8:56, None], 3, axis=2))  # 64 x 48: padded to square
    with_orientation(up, 8, tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("a dark disc")
    want = np.asarray(to_rgb_square(up, 32))
    assert np.array_equal(load_folder(tmp_path, size=32).images[0].permute(1, 2, 0).numpy(), want)
    assert np.array_equal(np.asarray(_open_image(tmp_path / "x.png", 32)), want)
    a16 = Image.fromarray(dark_disc().astype(np.uint16) * 257)
    assert np.array_equal(as_uint8_batch([a16])[0, 0].numpy(), dark_disc())  # PIL 16-bit via the API


def test_shapes_checker_composites_rgba_on_white():
    from blinkgen.eval.shapes_check import _as_array

    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert (_as_array(im) == 255).all()  # Pillow's convert("RGB") would give black
    assert np.array_equal(np.asarray(to_rgb(im)), np.full((8, 8, 3), 255, np.uint8))


def test_a_folder_given_as_an_image_is_called_a_folder(tmp_path):
    """Regression (fresh-user trial): `blinkgen caption mypics` said "(not a file)"."""
    from blinkgen.data.image_io import read_image
    from blinkgen.errors import ImageReadError

    with pytest.raises(ImageReadError, match="a folder, not an image file"):
        read_image(tmp_path)
