"""Everyday generation through the CLI (issue 16): negative prompts, prompt lists with wildcards,
variation seeds, replay from a PNG, `vary` and parameter grids. Most cases call `blinkgen.cli.main`
in this process (the same parsing and code as the command, without paying a model load per
case); one case runs the real command in a fresh process."""
from __future__ import annotations

import json
import shutil

import contextlib
import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from blinkgen.cli import main
from blinkgen.pngmeta import read_parameters
from blinkgen.families import get
from conftest import run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("everyday-models")
    return get("diffusion").make_tiny(root / "tiny"), get("diffusion").make_tiny(root / "other", seed=1)


def cli(*args) -> int:
    return main([str(a) for a in args])


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_negative_prompt_changes_the_image_and_is_recorded(models, tmp_path):
    tiny, _ = models
    assert cli("generate", "a red circle", "--model", tiny, "-o", tmp_path / "plain.png", "--guidance", 3) == 0
    assert cli("generate", "a red circle", "--model", tiny, "-o", tmp_path / "neg.png", "--guidance", 3,
               "--negative", "red") == 0
    assert not np.array_equal(pixels(tmp_path / "plain.png"), pixels(tmp_path / "neg.png"))
    assert read_parameters(tmp_path / "neg.png")["negative_prompt"] == "red"
    assert "negative_prompt" not in read_parameters(tmp_path / "plain.png")


def test_prompts_file_with_wildcards_same_images_at_batch_1_and_8(models, tmp_path):
    tiny, _ = models
    (tmp_path / "wildcards").mkdir()
    (tmp_path / "wildcards" / "colour.txt").write_text("red\nblue\ngreen\n")
    lines = "a __colour__ circle\n{one|two} {square|triangle}s\n\na {small|large} __colour__ heart\n"
    (tmp_path / "prompts.txt").write_bytes(lines.replace("\n", "\r\n").encode())  # an editor's CRLF file
    outs = {}
    for bs in (1, 8):
        out = tmp_path / f"bs{bs}"
        assert cli("generate", "--prompts-file", tmp_path / "prompts.txt", "-n", 3, "--seed", 10,
                   "--model", tiny, "--outdir", out, "--batch-size", bs) == 0
        outs[bs] = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert len(outs[1]) == 9 and outs[1] == outs[8]  # same names, same bytes
    recorded = [read_parameters(p) for p in (tmp_path / "bs1").glob("*.png")]
    assert sorted(r["seed"] for r in recorded) == list(range(10, 19))
    assert all("__" not in r["prompt"] and "{" not in r["prompt"] and r["prompt_template"] for r in recorded)
    assert len({r["prompt"] for r in recorded}) > 3  # the choices vary with the seed


def test_from_reproduces_byte_for_byte_in_a_fresh_process_and_refuses_another_model(models, tmp_path):
    tiny, other = models
    first = tmp_path / "first.png"
    assert cli("generate", "a {red|blue} heart", "--model", tiny, "-o", first, "--seed", 7, "--negative", "green",
               "--steps", 3, "--sampler", "heun", "--variation-seed", 99, "--variation-strength", 0.25) == 0
    r = run_cli("generate", "--from", first, "--model", tiny, "-o", tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == first.read_bytes()
    assert "bit for bit" in r.stderr
    r = run_cli("generate", "--from", first, "--model", other, "-o", tmp_path / "x.png", check=False)
    assert r.returncode == 2 and not (tmp_path / "x.png").exists()
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "weights" in err and "--any-model" in err


def test_from_with_a_flag_at_its_recorded_value_is_no_change(models, tmp_path):
    """--seed 7 on a seed-7 PNG was listed as a change, which skipped the bit-for-bit check."""
    tiny, _ = models
    first = tmp_path / "first.png"
    assert cli("generate", "a red heart", "--model", tiny, "-o", first, "--seed", 7, "--steps", 3,
               "--guidance", 2, "--negative", "green") == 0
    r = run_cli("generate", "--from", first, "--model", tiny, "-o", tmp_path / "same.png", "--seed", "7",
                "--guidance", "2.0", "--steps", "3", "--negative", "green", "--dtype", "fp32", "a red heart")
    assert f"reproduced {first} bit for bit" in r.stderr, r.stderr
    r = run_cli("generate", "--from", first, "--model", tiny, "-o", tmp_path / "other.png", "--seed", "8",
                "--guidance", "2")
    assert f"replayed {first} with changes: seed\n" in r.stderr, r.stderr


def test_from_says_what_differs(models, tmp_path):
    tiny, other = models
    a = tmp_path / "a.png"
    assert cli("generate", "a blue square", "--model", tiny, "-o", a) == 0
    # the same record on other pixels, as another torch would make them: named, not silent
    params = {**read_parameters(a), "torch_version": "1.0"}
    im = Image.open(a).convert("RGB")
    im.putpixel((0, 0), (0, 0, 0) if im.getpixel((0, 0)) != (0, 0, 0) else (255, 255, 255))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.dumps(params))
    im.save(tmp_path / "old.png", pnginfo=info)
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert cli("generate", "--from", tmp_path / "old.png", "--model", tiny, "-o", tmp_path / "b.png") == 0
    capture = buf.getvalue()
    assert "not reproduced bit for bit: 1 of" in capture and "torch version 1.0 then" in capture
    with contextlib.redirect_stderr(buf):
        assert cli("generate", "--from", tmp_path / "old.png", "--model", other, "--any-model", "-o", tmp_path / "c.png") == 0
    plain = tmp_path / "plain.png"
    Image.open(a).save(plain)  # metadata stripped, as an editor or chat app does
    with contextlib.redirect_stderr(buf):
        assert cli("generate", "--from", plain, "-o", tmp_path / "d.png") == 2
    assert "no 'parameters' text chunk" in buf.getvalue()


def test_variation_strength_zero_is_the_base_image_and_vary(models, tmp_path):
    tiny, _ = models
    assert cli("generate", "a green triangle", "--model", tiny, "-o", tmp_path / "base.png", "--seed", 3) == 0
    assert cli("generate", "a green triangle", "--model", tiny, "-o", tmp_path / "v0.png", "--seed", 3,
               "--variation-seed", 8, "--variation-strength", 0) == 0
    assert np.array_equal(pixels(tmp_path / "base.png"), pixels(tmp_path / "v0.png"))
    assert cli("vary", tmp_path / "base.png", "--model", tiny, "-n", 3, "--strength", 0.3, "--variation-seed", 50,
               "--outdir", tmp_path / "vary") == 0
    made = sorted((tmp_path / "vary").glob("*.png"))
    recs = [read_parameters(p) for p in made]
    assert len(made) == 3 and {r["seed"] for r in recs} == {3} and {r["variation_seed"] for r in recs} == {50, 51, 52}
    base = pixels(tmp_path / "base.png").astype(int)
    diffs = [np.abs(pixels(p).astype(int) - base).mean() for p in made]
    assert all(d > 0 for d in diffs)
    # a variation replays too (its variation seed and strength are restored)
    assert cli("generate", "--from", made[0], "--model", tiny, "-o", tmp_path / "again.png") == 0
    assert (tmp_path / "again.png").read_bytes() == made[0].read_bytes()
    # one `vary` for both kinds: --img2img varies the same blinkgen PNG by img2img (issue 12's path)
    assert cli("vary", tmp_path / "base.png", "--img2img", "--prompt", "a green triangle", "--model", tiny,
               "--steps", 2, "-n", 1, "-o", tmp_path / "i2i.png") == 0
    assert read_parameters(tmp_path / "i2i.png")["edit"] == "variation"
    # a -n grid PNG: vary says which of its images it varies (regression: it silently took the first)
    assert cli("generate", "a green triangle", "--model", tiny, "-n", 2, "--seed", 5, "--grid", "-o", tmp_path / "g.png") == 0
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert cli("vary", tmp_path / "g.png", "--model", tiny, "-n", 1, "-o", tmp_path / "gv.png") == 0
    assert "is a grid of 2 images (seeds 5..6); varying the first, seed 5" in buf.getvalue()
    assert read_parameters(tmp_path / "gv.png")["seed"] == 5


def test_grid_labels_and_cells_and_checkpoint_axis(models, tmp_path):
    tiny, other = models
    out = tmp_path / "g.png"
    assert cli("grid", "a red circle", "--x", "steps=1,2,4", "--y", "guidance=1,3", "-n", 2, "--model", tiny,
               "--score", "-o", out) == 0
    rec = read_parameters(out)["grid"]
    assert rec["cells"] == 6 and rec["x_labels"] == ["steps=1", "steps=2", "steps=4"]
    assert rec["y_labels"] == ["guidance=1", "guidance=3"]
    assert [[next(iter(c)) for c in row] for row in rec["scores"]] == [["shapes"] * 3] * 2
    im = Image.open(out)
    assert im.width > 3 * 2 * 32 and im.height > 2 * 32  # 3 columns of 2 images, 2 rows (and labels)
    # the label strip is drawn (dark text pixels above the first row of cells)
    assert (np.asarray(im.convert("L"))[:20] < 128).any()
    # a training checkpoint as an axis value: its EMA weights in the run's exported model
    run = tmp_path / "run"
    shutil.copytree(other, run / "model")
    ck = run / "checkpoints" / "step-00000002"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text("{}")
    shutil.copy(tiny / "model.safetensors", ck / "ema.safetensors")
    out2 = tmp_path / "g2.png"
    assert cli("grid", "a red circle", "--x", f"model={tiny},{run / 'model'},{ck}", "--model", tiny, "-o", out2) == 0
    rec2 = read_parameters(out2)["grid"]
    assert rec2["x_labels"] == ["tiny", "run", "run@step-00000002"] and rec2["cells"] == 3
    assert cli("grid", "x", "--model", tiny, "-o", tmp_path / "no.png") == 2
    assert cli("grid", "x", "--x", "nonsense=1,2", "--model", tiny, "-o", tmp_path / "no.png") == 2
