"""Folder loader: both caption conventions, colour handling, and that bad files are skipped by
name while training data still loads. Real files in tmp_path; no mocks."""
import json
import logging
import unicodedata

import pytest
import torch
from hypothesis import given, strategies as st
from PIL import Image

from blinkgen.data.folder import (BAD_ROW, EMPTY_CAPTION, MISSING_FILE, NO_CAPTION, NO_IMAGE, TOO_LARGE,
                                  TOO_SMALL, UNREADABLE, UNSAFE_PATH, load_folder, looks_wrapped,
                                  normalize_caption, save_folder)
from blinkgen.data.types import ImageCaptionSet
from blinkgen.errors import DataError
from conftest import run_cli

torch.set_num_threads(1)


def _png(path, mode="RGB", size=(16, 16), color=(255, 0, 0), **info):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **info)


def _meta(folder, rows):
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_metadata_jsonl_with_subfolders_and_extra_captions(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "b.jpg", color=(0, 0, 255))
    _meta(tmp_path, [{"file_name": "a.png", "text": "a red_square", "captions": ["red  box", "a red square"]},
                     {"file_name": "sub/b.jpg", "text": "blue"}])
    ds = load_folder(tmp_path, size=8)
    assert ds.names == ["a.png", "sub/b.jpg"]
    assert ds.captions == [["a red square", "red box"], ["blue"]]
    assert ds.images.shape == (2, 3, 8, 8) and ds.images.dtype == torch.uint8
    assert tuple(ds.images[0, :, 4, 4]) == (255, 0, 0)
    assert ds.report.loaded == 2 and ds.report.n_skipped == 0


def test_sidecar_captions_one_per_nonempty_line(tmp_path):
    _png(tmp_path / "cat.webp")
    (tmp_path / "cat.txt").write_text("a cat\n\n  a small cat  \n")
    ds = load_folder(tmp_path, size=16)
    assert ds.captions == [["a cat", "a small cat"]]


def test_rgba_composited_on_white_and_nonsquare_padded(tmp_path):
    im = Image.new("RGBA", (20, 10), (0, 0, 0, 0))        # fully transparent left half
    im.paste((0, 0, 0, 255), (10, 0, 20, 10))            # opaque black right half
    im.save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("half black")
    px = load_folder(tmp_path, size=20).images[0]
    assert tuple(px[:, 10, 2]) == (255, 255, 255)         # transparent -> white
    assert tuple(px[:, 10, 17]) == (0, 0, 0)              # opaque black stays black
    assert tuple(px[:, 1, 17]) == (255, 255, 255)         # top padding is white, not black


def test_grayscale_palette_cmyk_and_transparent_palette(tmp_path):
    _png(tmp_path / "l.png", mode="L", color=128)
    Image.new("RGB", (16, 16), (0, 200, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    pt = Image.new("P", (16, 16), 0)
    pt.putpalette([0, 0, 0] * 256)
    pt.save(tmp_path / "pt.png", transparency=0)           # palette index 0 is transparent
    for n in ("l", "p", "c", "pt"):
        (tmp_path / f"{n}.txt").write_text(n)
    ds = load_folder(tmp_path, size=16)
    got = {n: tuple(ds.images[i, :, 8, 8].tolist()) for i, n in enumerate(ds.names)}
    assert got["l.png"] == (128, 128, 128)
    assert got["p.png"] == (0, 200, 0)
    assert all(v >= 250 for v in got["c.jpg"])             # CMYK 0,0,0,0 is white
    assert got["pt.png"] == (255, 255, 255)


def test_bad_files_skipped_and_reported_by_name(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "good.txt").write_text("good")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "corrupt.txt").write_text("corrupt")
    _png(tmp_path / "nocap.png")
    _png(tmp_path / "empty.png")
    (tmp_path / "empty.txt").write_text("\n  \n")
    _png(tmp_path / "tiny.png", size=(4, 4))
    (tmp_path / "tiny.txt").write_text("tiny")
    _png(tmp_path / "huge.png", mode="L", size=(9000, 8), color=0)
    (tmp_path / "huge.txt").write_text("huge")
    _png(tmp_path / ".hidden.png")
    _meta(tmp_path, [{"file_name": "gone.png", "text": "gone"}, "{not json",
                      {"file_name": "../escape.png", "text": "x"}, {"file_name": "empty.png", "text": ""}])
    ds = load_folder(tmp_path, size=8)
    assert ds.names == ["good.png"]
    sk = ds.report.skipped
    assert sk[UNREADABLE] == ["corrupt.png"] and sk[NO_CAPTION] == ["nocap.png"]
    assert sk[EMPTY_CAPTION] == ["empty.png"] and sk[TOO_SMALL] == ["tiny.png"]
    assert sk[TOO_LARGE] == ["huge.png"] and sk[MISSING_FILE] == ["gone.png"]
    assert sk[BAD_ROW] == ["metadata.jsonl:2"] and sk[UNSAFE_PATH] == ["../escape.png"]
    assert "corrupt.png" in ds.report.summary()


def test_all_bad_folder_raises_with_what_was_found(tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    (tmp_path / "a.txt").write_text("a")
    _png(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"found 2 image files.*no metadata.jsonl.*unreadable"):
        load_folder(tmp_path, size=8)
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nope", size=8)


def test_save_folder_round_trips(tmp_path):
    imgs = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    ds = ImageCaptionSet(imgs, [["one", "uno"], ["two"], ["three"]], ["a", "b", "c"])
    back = load_folder(save_folder(ds, tmp_path / "out", prefix="s/"), size=8)
    assert torch.equal(back.images, imgs) and back.captions == ds.captions


@given(st.text())
def test_normalize_caption_is_canonical(s):
    c = normalize_caption(s)
    assert normalize_caption(c) == c                       # idempotent
    assert c == c.strip() and "  " not in c and "_" not in c
    assert not any(ch in c for ch in "\n\t\r")
    assert "\ufeff" not in c                                # byte-order marks dropped (issue 10)
    assert c.split() == s.replace("_", " ").replace("\ufeff", "").split()  # only spacing changed, words kept


# --- a fresh-user trial: image formats, Unicode file names, wrapped captions, `data inspect` ---

def test_every_format_the_reader_takes_loads_from_a_folder(tmp_path):
    """.bmp/.gif/.tif(f) images with captions were silently ignored: the folder listed only
    .png/.jpg/.jpeg/.webp while the reader decodes PNG/JPEG/WEBP/GIF/BMP/TIFF."""
    for i in range(2):
        _png(tmp_path / f"p{i}.png")
        (tmp_path / f"p{i}.txt").write_text(f"png {i}")
    _png(tmp_path / "icon.bmp", color=(0, 255, 0))
    frames = [Image.new("P", (16, 16), 0), Image.new("P", (16, 16), 1)]
    for f in frames:
        f.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    _png(tmp_path / "scan.tif", color=(0, 0, 255))
    _png(tmp_path / "sub" / "SHOT.TIFF", color=(0, 0, 255))
    for n in ("icon", "anim", "scan", "sub/SHOT"):
        (tmp_path / f"{n}.txt").write_text(n)
    ds = load_folder(tmp_path, size=8)
    assert ds.names == ["anim.gif", "icon.bmp", "p0.png", "p1.png", "scan.tif", "sub/SHOT.TIFF"]
    assert ds.report.n_skipped == 0
    px = {n: tuple(ds.images[i, :, 4, 4].tolist()) for i, n in enumerate(ds.names)}
    assert px["anim.gif"] == (255, 0, 0)                   # the first frame, as the reader gives
    assert px["icon.bmp"] == (0, 255, 0) and px["scan.tif"] == (0, 0, 255)


def test_image_extensions_are_the_readers_formats():
    """One list: every extension the folder takes is one Pillow opens as a reader format, and
    every reader format has an extension (a format added to the reader reaches folders too)."""
    from blinkgen.data.image_io import FORMATS, IMAGE_EXTENSIONS

    registered = Image.registered_extensions()
    assert all(e == e.lower() and registered.get(e) in FORMATS for e in IMAGE_EXTENSIONS)
    assert {registered[e] for e in IMAGE_EXTENSIONS} == set(FORMATS)


def test_caption_files_without_an_image_are_reported_by_name(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "orphan.txt").write_text("no picture")
    (tmp_path / "logo.svg").write_text("<svg/>")          # not a format the reader takes
    (tmp_path / "logo.txt").write_text("a logo")
    (tmp_path / "README.txt").write_text("about this set")  # documents are not captions
    (tmp_path / "LICENSES").mkdir()
    (tmp_path / "LICENSES" / "CC-BY-4.0.txt").write_text("licence")
    ds = load_folder(tmp_path, size=8)
    assert ds.names == ["a.png"]
    assert ds.report.skipped == {NO_IMAGE: ["logo.txt", "orphan.txt"]}
    (tmp_path / "a.png").unlink()
    with pytest.raises(DataError, match=r"found 0 image files \(.*\.gif.*\.bmp.*\.tif.*a\.txt, logo\.txt, orphan\.txt"):
        load_folder(tmp_path, size=8)


def test_decomposed_unicode_names_match_composed_ones(tmp_path):
    """macOS writes 'étoile.png' decomposed (NFD); metadata.jsonl typed in an editor is composed
    (NFC). It was reported both missing and uncaptioned, and lost."""
    nfd, nfc = (unicodedata.normalize(f, "étoile") for f in ("NFD", "NFC"))
    assert nfd != nfc
    _png(tmp_path / f"{nfd}.png")
    _meta(tmp_path, [{"file_name": f"{nfc}.png", "text": "a star", "group": "stars"}])
    _png(tmp_path / f"{nfc}-2.png", color=(0, 0, 255))     # composed image, decomposed sidecar
    (tmp_path / f"{nfd}-2.txt").write_text("a blue star")
    ds = load_folder(tmp_path, size=8)
    assert ds.report.n_skipped == 0, ds.report.summary()
    assert ds.names == [f"{nfc}-2.png", f"{nfc}.png"]      # NFC, as metadata spells them
    assert ds.captions == [["a blue star"], ["a star"]]
    assert ds.groups == ["", "stars"]
    assert tuple(ds.images[0, :, 4, 4].tolist()) == (0, 0, 255)


def test_a_caption_wrapped_over_two_lines_warns_once_naming_the_files(tmp_path, caplog):
    """Each sidecar line is one caption (kept), but a line that ends mid-caption is most likely
    a wrap: one warning per folder names the files and says each line is a separate caption."""
    texts = {"z": "a zorbo icon,\nred star with a black dot\n", "w": "a cat with\na hat\n",
             "ok": "a red square\na red box\n", "last": "a tidy caption,\n", "band": "a rubber band\nblue\n"}
    for n, t in texts.items():
        _png(tmp_path / f"{n}.png")
        (tmp_path / f"{n}.txt").write_text(t)
    with caplog.at_level(logging.WARNING, logger="blinkgen.data.folder"):
        ds = load_folder(tmp_path, size=8)
    assert dict(zip(ds.names, ds.captions))["z.png"] == ["a zorbo icon,", "red star with a black dot"]
    warnings = [r.getMessage() for r in caplog.records if "separate caption" in r.getMessage()]
    assert len(warnings) == 1
    assert "w.txt" in warnings[0] and "z.txt" in warnings[0]
    assert not any(n in warnings[0] for n in ("ok.txt", "last.txt", "band.txt"))


@pytest.mark.parametrize("line,wrapped", [("a zorbo icon,", True), ("red;", True), ("note:", True),
                                          ("sci-", True), ("salt &", True), ("bread AND", True),
                                          ("a cup of ", True), ("a band", False), ("a roof", False),
                                          ("a star", False), ("smile :)", False)])
def test_looks_wrapped(line, wrapped):
    assert looks_wrapped([line, "next"]) is wrapped
    assert looks_wrapped([line]) is False                  # the last line cannot continue


def test_cli_inspect_prints_the_report_once_and_says_how_many_more(tmp_path):
    """The skip report was printed twice (a WARNING on stderr and stdout), and 9 images listed 5
    captions with no word about the other 4."""
    for i in range(9):
        _png(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"picture {i}")
    _png(tmp_path / "nocap.png")
    r = run_cli("data", "inspect", tmp_path)
    assert r.stdout.count("no caption: 1 (nocap.png)") == 1, r.stdout
    assert "nocap.png" not in r.stderr and "skipped" not in r.stderr, r.stderr
    assert "loaded 9 images, skipped 1" in r.stdout
    assert "... and 4 more images" in r.stdout
    assert "more images" not in run_cli("data", "inspect", tmp_path, "--examples", "9").stdout


def test_images_that_will_train_poorly_are_named(tmp_path, caplog):
    """Fresh-user trial: a 2000x300 banner became a speck and an 8x8 icon a blur, without a word."""
    import logging

    from PIL import Image

    from blinkgen.data.folder import load_folder

    for name, size in (("banner.png", (2000, 300)), ("tiny8.png", (8, 8)), ("ok.png", (64, 60))):
        Image.new("RGB", size, "yellow").save(tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text("a yellow block\n")
    with caplog.at_level(logging.WARNING, logger="blinkgen"):
        ds = load_folder(tmp_path, 64)
    assert len(ds) == 3  # kept: the user decides
    lines = [r.getMessage() for r in caplog.records if "train poorly" in r.getMessage()]
    assert len(lines) == 1 and "banner.png (2000x300)" in lines[0] and "tiny8.png (8x8)" in lines[0]
    assert "ok.png" not in lines[0]
