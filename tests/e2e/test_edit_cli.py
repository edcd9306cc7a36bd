"""Images in from the command line, as a user runs it (fresh processes, real tiny models):
`blinkgen edit` (inpainting with an OpenAI-style mask, img2img), `blinkgen vary`, `blinkgen
upscale`, `generate --size` through an upscaler; and the one-line errors (exit 2) for a
non-square image, a missing file, a mask of another size, a size no upscaler makes, an existing
output. The Python side: `blinkgen.api.upscale`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny, run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit-cli")
    return {"gen": make_tiny("diffusion", root / "gen"),  # 32 px
            "up": make_tiny("upscaler", root / "up", image_size=64),  # 32 -> 64 px
            "root": root}


def picture(path, side=32, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_edit_inpaints_with_an_openai_mask_and_img2img(models, tmp_path):
    src = picture(tmp_path / "in.png")
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 16, 32))  # the left half is transparent: repaint it
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    r = run_cli("edit", src, "a red circle", "--mask", tmp_path / "mask.png", "--model", models["gen"],
                "--steps", "2", "--seed", "4", "-o", out)
    assert r.stdout.strip() == str(out)
    a, b = np.asarray(Image.open(out)), np.asarray(Image.open(src))
    assert np.array_equal(a[:, 16:], b[:, 16:]) and not np.array_equal(a[:, :16], b[:, :16])
    params = json.loads(Image.open(out).text["parameters"])
    assert params["edit"] == "inpaint" and params["seed"] == 4 and params["mask"] == "mask.png"
    r = run_cli("edit", src, "a blue square", "--strength", "0.5", "--model", models["gen"], "--steps", "2",
                "-n", "2", "--outdir", tmp_path / "i2i")
    files = r.stdout.split()
    assert len(files) == 2 and all(json.loads(Image.open(f).text["parameters"])["strength"] == 0.5 for f in files)
    again = run_cli("edit", src, "a blue square", "--strength", "0.5", "--model", models["gen"], "--steps", "2",
                    "-n", "2", "--outdir", tmp_path / "i2i", check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # never replaced silently


def test_vary_upscale_and_generate_size(models, tmp_path):
    src = picture(tmp_path / "in.png", seed=1)
    r = run_cli("vary", src, "--model", models["gen"], "--steps", "2", "-n", "2", "--outdir", tmp_path / "v")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("prompt (best caption") and len(lines) == 3
    assert json.loads(Image.open(lines[1]).text["parameters"])["edit"] == "variation"
    big = tmp_path / "big.png"
    r = run_cli("upscale", src, "--model", models["up"], "-o", big)
    assert Image.open(big).size == (64, 64) and "resized" not in r.stderr  # the upscaler's own input size
    odd = picture(tmp_path / "odd.png", side=48)
    r = run_cli("upscale", odd, "--model", models["up"], "-o", tmp_path / "odd-up.png")
    assert "is 48x48 px; this model takes 32x32, so it is resized to 32 px first and the output is 64x64" in r.stderr
    g = tmp_path / "g.png"
    run_cli("generate", "a green star", "--model", models["gen"], "--steps", "2", "--size", "64",
            "--upscaler", models["up"], "-o", g)
    assert Image.open(g).size == (64, 64) and json.loads(Image.open(g).text["parameters"])["size"] == 64


@pytest.mark.parametrize("args, msg", [
    (["edit", "{rect}", "a"], "r.png is 32x20 px; blinkgen edits and upscales square images"),
    (["edit", "{missing}", "a"], "image file not found"),
    (["edit", "{sq}", "a", "--mask", "{small}"], "the mask {small} is 16x16 px but the image {sq} is 32x32"),
    (["edit", "{sq}", "a", "--mask", "{black}"], "is all black, so nothing would be repainted"),
    (["edit", "{sq}", "a", "--strength", "0"], "strength must be a number in (0, 1], got 0.0"),
    (["edit", "{sq}", "a", "--strength", "1.5"], "strength must be a number in (0, 1], got 1.5"),
    (["vary", "{sq}", "--strength", "0"], "strength must be a number in (0, 1], got 0.0"),  # before captioning
    (["vary", "{sq}", "--grid"], "--grid vary a PNG made by blinkgen"),  # was silently ignored
    (["edit", "{sq}", "a", "-n", "0"], "-n must be between 1 and"),  # succeeded, writing nothing
    (["vary", "{sq}", "-n", "0"], "-n must be between 1 and"),
    (["generate", "a", "--size", "128", "--upscaler", "{up}"], "maps 32 -> 64 px, so --size takes 32 or 64"),
    (["upscale", "{sq}", "--model", "{gen}"], "not an upscaler"),
    (["upscale", "{rect}", "--model", "{up}"], "r.png is 32x20 px"),  # no resize note promising a size first
])
def test_one_line_errors(models, tmp_path, args, msg):
    paths = {"rect": picture(tmp_path / "r.png", 32)}
    Image.new("RGB", (32, 20)).save(paths["rect"])
    paths.update(sq=picture(tmp_path / "s.png"), small=picture(tmp_path / "m.png", 16), missing=tmp_path / "no.png",
                 up=models["up"], gen=models["gen"], black=tmp_path / "black.png")
    Image.new("L", (32, 32), 0).save(paths["black"])
    argv = [a.format(**paths) for a in args]
    if argv[0] in ("edit", "generate", "vary"):
        argv += ["--model", str(models["gen"]), "--steps", "1"]
    r = run_cli(*argv, "-o", tmp_path / "x.png", check=False)
    assert r.returncode == 2 and msg.format(**paths) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "resized" not in r.stderr, r.stderr


@pytest.mark.parametrize("argv", [
    ["generate", "a", "--outdir", "{file}"],
    ["generate", "a", "-o", "{file}/x.png"],
    ["edit", "{sq}", "a", "--outdir", "{file}"],
    ["upscale", "{sq}", "--outdir", "{file}/sub"],
])
def test_a_file_where_a_folder_must_be_is_one_line(models, tmp_path, argv):
    """An existing file given as the output folder (or above it) is refused before any work."""
    paths = {"file": tmp_path / "w4.png", "sq": picture(tmp_path / "s.png")}
    paths["file"].write_bytes(b"keep me")
    argv = [a.format(**paths) for a in argv]
    argv += ["--model", str(models["up" if argv[0] == "upscale" else "gen"])] + (["--steps", "1"] if argv[0] != "upscale" else [])
    r = run_cli(*argv, check=False)
    assert r.returncode == 2 and "w4.png is a file, not a folder" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert paths["file"].read_bytes() == b"keep me"  # nothing lost


def test_o_naming_a_folder_says_outdir(models, tmp_path):
    r = run_cli("generate", "a", "--model", models["gen"], "--steps", "1", "-o", tmp_path / "up", check=False)
    assert r.returncode == 2 and "--outdir" in r.stderr, r.stderr


def test_python_upscale(models):
    from blinkgen.api import upscale

    ims = upscale([Image.new("RGB", (32, 32), "red"), np.zeros((32, 32, 3), np.uint8)], str(models["up"]))
    assert [im.size for im in ims] == [(64, 64)] * 2


def test_vary_of_a_bf16_png_keeps_its_dtype(models, tmp_path):
    """vary passed its own --dtype default (fp32) on, so a bf16 picture was varied in fp32 and its
    variation recorded fp32: the recorded dtype now carries over unless --dtype is given."""
    src = tmp_path / "b.png"
    run_cli("generate", "a red circle", "--model", models["gen"], "--steps", "2", "--dtype", "bf16", "-o", src)
    assert json.loads(Image.open(src).text["parameters"]).get("dtype") == "bf16"
    out = run_cli("vary", src, "--model", models["gen"], "--steps", "2", "-n", "1", "--outdir", tmp_path / "v").stdout.split()
    assert len(out) == 1 and json.loads(Image.open(out[0]).text["parameters"]).get("dtype") == "bf16"
    out = run_cli("vary", src, "--model", models["gen"], "--steps", "2", "-n", "1", "--dtype", "fp32",
                  "--outdir", tmp_path / "v32").stdout.split()
    assert len(out) == 1 and json.loads(Image.open(out[0]).text["parameters"]).get("dtype", "fp32") == "fp32"
