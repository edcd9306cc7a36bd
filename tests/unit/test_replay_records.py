"""Every key a blinkgen writer puts in a PNG's `parameters` chunk is handled by replay (restored,
checked, or the reason the record is not a generation to replay), so a new key cannot silently
break `generate --from` or `vary` again; and every edit records the strength it ran at.

The writers run in this process through the real CLI (cli.main) on a tiny random model, with the
captioner replaced by a stub (its weights are not what these tests are about).
"""
from __future__ import annotations

import json
from dataclasses import fields
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from blinkgen import cli, replay
from blinkgen.api import load
from blinkgen.errors import UserInputError
from blinkgen.pngmeta import edit_record, read_parameters
from blinkgen.sampling.edit import IMG2IMG_STRENGTH, INPAINT_STRENGTH
from conftest import make_tiny
from lora_helpers import make_adapter

STEPS = ["--steps", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay-models")
    gen = make_tiny("diffusion", root / "gen")  # 32 px
    return {"gen": gen, "up": make_tiny("upscaler", root / "up", image_size=64),  # 32 -> 64 px
            "lora": make_adapter(gen, root / "lora")}


@pytest.fixture(autouse=True)
def stub_captioner(monkeypatch):
    import blinkgen.eval.caption as caption

    monkeypatch.setattr(caption, "caption", lambda image, top_k=1: [("a red circle", 0.3125)])


def blinkgen(*argv) -> int:
    return cli.main([str(a) for a in argv])


def picture(path, side=32, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def mask(path):
    m = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (0, 0, 16, 32))
    m.save(path)
    return path


@pytest.fixture(scope="module")
def written(models, tmp_path_factory):
    """{writer: PNG path} for every command that writes a PNG record (real runs)."""
    import blinkgen.eval.caption as caption

    d = tmp_path_factory.mktemp("written")
    src, m, gen = picture(d / "in.png"), mask(d / "m.png"), models["gen"]
    runs = {
        "generate": ["generate", "a red heart", "--model", gen, *STEPS, "--style", "flat"],
        "generate_size": ["generate", "a red heart", "--model", gen, *STEPS, "--size", "64",
                          "--upscaler", models["up"]],
        "generate_grid": ["generate", "a {red|blue} heart", "--model", gen, *STEPS, "-n", "2", "--grid"],
        "generate_variation": ["generate", "a red heart", "--model", gen, *STEPS, "--variation-seed", "7",
                               "--variation-strength", "0.2", "--negative", "blur"],
        "generate_lora": ["generate", "a red heart", "--model", gen, *STEPS, "--lora", models["lora"],
                          "--lora-scale", "0.5"],
        "edit": ["edit", src, "a green star", "--model", gen, *STEPS],
        "edit_strength": ["edit", src, "a green star", "--model", gen, *STEPS, "--strength", "0.3"],
        "inpaint": ["edit", src, "a green star", "--mask", m, "--model", gen, *STEPS],
        "vary": ["vary", src, "--model", gen, *STEPS, "-n", "1"],
        "vary_prompt": ["vary", src, "--prompt", "a blue square", "--model", gen, *STEPS, "-n", "1"],
        "grid": ["grid", "a red heart", "--x", "steps=1,2", "--model", gen],
        "upscale": ["upscale", src, "--model", models["up"]],
    }
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(caption, "caption", lambda image, top_k=1: [("a red circle", 0.3125)])
        for name, argv in runs.items():
            out[name] = d / f"{name}.png"
            assert blinkgen(*argv, "-o", out[name]) == 0, name
    return out


REPLAYABLE = ("generate", "generate_size", "generate_grid", "generate_variation", "generate_lora")
NOT_GENERATIONS = {"edit": "blinkgen edit", "edit_strength": "blinkgen edit", "inpaint": "--mask",
                   "vary": "blinkgen vary", "vary_prompt": "blinkgen vary", "grid": "blinkgen grid",
                   "upscale": "blinkgen upscale"}


def test_every_writer_is_covered_here(written):
    assert set(written) == set(REPLAYABLE) | set(NOT_GENERATIONS)


@pytest.mark.parametrize("writer", sorted(set(REPLAYABLE) | set(NOT_GENERATIONS)))
def test_every_recorded_key_has_a_role(written, models, writer):
    """A key a writer records is a settings field of the family, or has a role in replay.KEY_ROLES."""
    params = read_parameters(written[writer])
    settings = {f.name for f in fields(load(str(models["gen"])).settings_type)}
    unhandled = sorted(k for k in params if k not in replay.KEY_ROLES and k not in settings)
    assert not unhandled, f"{writer} records keys replay does not handle: {unhandled}"


@pytest.mark.parametrize("writer", REPLAYABLE)
def test_generate_records_replay(written, models, writer):
    params = replay.read_png(written[writer])
    pipe = load(str(models["gen"]))
    replay.request_and_settings(params, pipe)  # no UserInputError: every key restored or known


@pytest.mark.parametrize("writer", sorted(NOT_GENERATIONS))
def test_other_records_are_refused_with_how_to_redo_them(written, writer):
    with pytest.raises(replay.NotAGenerationError) as e:
        replay.read_png(written[writer])
    msg = str(e.value)
    assert "\n" not in msg and NOT_GENERATIONS[writer] in msg and str(written[writer]) in msg
    if writer != "grid":
        assert "in.png" in msg  # the source image, by name


def test_edit_redo_command_has_the_recorded_settings(written):
    with pytest.raises(replay.NotAGenerationError) as e:
        replay.read_png(written["edit_strength"])
    msg = str(e.value)
    assert "blinkgen edit in.png 'a green star'" in msg and "--strength 0.3" in msg and "--seed 0" in msg
    assert "--steps 2" in msg


def test_size_is_restored_as_a_generate_option(written):
    assert replay.generate_options(read_parameters(written["generate_size"])) == {"size": 64, "upscaler": "up"}
    assert replay.generate_options(read_parameters(written["generate"])) == {}


def test_generate_from_a_size_png_runs(written, models, tmp_path):
    assert blinkgen("generate", "--from", written["generate_size"], "--model", models["gen"],
                    "--upscaler", models["up"], "-o", tmp_path / "r.png") == 0


def test_an_explicit_upscaler_wins_over_the_recorded_one(written, models, tmp_path, capsys):
    # Regression: `--upscaler upscaler` (the embedded one, generate's old default) was taken for
    # "not given", so the record's upscaler 'up' (a folder name this replay cannot find) was used.
    assert blinkgen("generate", "--from", written["generate_size"], "--model", models["gen"],
                    "--upscaler", "upscaler", "-o", tmp_path / "r.png") == 2
    err = capsys.readouterr().err
    assert "upscaled by a model named" not in err and "--size 64" in err  # the embedded x2 maps 64 -> 128


def test_a_recorded_upscaler_is_found_or_named():
    assert replay.upscaler_for({"size": 128, "upscaler": "upscaler"}) == "upscaler"  # the embedded one
    with pytest.raises(UserInputError, match="upscaled by a model named 'up'.*--upscaler FOLDER"):
        replay.upscaler_for({"size": 64, "upscaler": "up"})
    with pytest.raises(UserInputError, match="no --size"):
        replay.upscaler_for({})


def test_generate_from_a_size_png_restores_its_size(written, models, tmp_path):
    out = tmp_path / "r.png"
    assert blinkgen("generate", "--from", written["generate_size"], "--model", models["gen"],
                    "--upscaler", models["up"], "-o", out) == 0
    assert Image.open(out).size == (64, 64)


def test_a_size_difference_names_the_size_option(written, models):
    params, pipe = read_parameters(written["generate_size"]), load(str(models["gen"]))
    small = Image.open(written["generate"])  # 32 px: what a replay without --size makes
    assert "made at --size 64 through up" in replay.difference(written["generate_size"], small, params, pipe)


@pytest.mark.parametrize("writer", ["edit", "inpaint", "vary"])
def test_generate_from_an_edit_png_is_one_clear_line(written, models, tmp_path, capsys, writer):
    assert blinkgen("generate", "--from", written[writer], "--model", models["gen"], "-o", tmp_path / "r.png") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "source image" in err and "in.png" in err and "does not have" not in err
    assert "file name only: give its path" in err  # the record keeps in.png, not where it was


@pytest.mark.parametrize("writer", ["edit", "inpaint", "vary", "upscale"])
def test_vary_of_a_non_generation_png_falls_back_to_img2img(written, models, tmp_path, capsys, writer):
    out = tmp_path / "v.png"
    assert blinkgen("vary", written[writer], "--model", models["gen"], *STEPS, "-n", "1", "-o", out) == 0
    assert "varying it by img2img" in capsys.readouterr().err  # the fallback is said
    params = read_parameters(out)
    assert params["edit"] == "variation" and params["init_image"] == f"{writer}.png"
    # an edit's own prompt steers the variation, not a fresh caption (the captioner here says "a red circle")
    want = {"edit": "a green star", "inpaint": "a green star", "vary": "a red circle", "upscale": "a red circle"}
    assert params["prompt"] == want[writer]


def test_vary_of_a_generate_png_still_uses_its_recipe(written, models, tmp_path):
    out = tmp_path / "v.png"
    assert blinkgen("vary", written["generate"], "--model", models["gen"], "-n", "1", "--variation-seed", "3",
                    "-o", out) == 0
    params = read_parameters(out)
    assert "edit" not in params and params["variation_seed"] == 3


# --- the strength actually used is recorded, defaults included (bug 2) -------------------------
@pytest.mark.parametrize("writer, strength", [("edit", IMG2IMG_STRENGTH), ("edit_strength", 0.3),
                                              ("inpaint", INPAINT_STRENGTH), ("vary", IMG2IMG_STRENGTH),
                                              ("vary_prompt", IMG2IMG_STRENGTH)])
def test_edits_record_the_strength_they_ran_at(written, writer, strength):
    assert read_parameters(written[writer])["strength"] == strength


def test_edit_record_resolves_the_default_strength():
    assert edit_record("img2img", None, False, "a.png") == {"edit": "img2img", "init_image": "a.png",
                                                           "strength": IMG2IMG_STRENGTH}
    assert edit_record("inpaint", None, True, "a.png", "m.png")["strength"] == INPAINT_STRENGTH
    assert edit_record("variation", 0.25, False)["strength"] == 0.25
    with pytest.raises(ValueError):
        edit_record("sharpen", None, False)


def test_server_edits_record_the_default_strength():
    from blinkgen.serve.batcher import edit_parameters

    job = SimpleNamespace(init_image=object(), mask=None, revised_prompt=None, strength=None)
    assert edit_parameters(job)["strength"] == IMG2IMG_STRENGTH
    job.mask = object()
    assert edit_parameters(job)["strength"] == INPAINT_STRENGTH


def test_a_server_edit_record_is_refused_with_how_to_redo_it(models):
    pipe = load(str(models["gen"]))
    params = {**pipe.png_parameters("a green star", 5, pipe.settings(2)), "edit": "img2img", "strength": 0.6}
    with pytest.raises(replay.NotAGenerationError) as e:
        replay.check_record(params, "s.png")
    assert "blinkgen edit" in str(e.value) and "source image" in str(e.value)


def test_unknown_keys_are_still_named(models):
    pipe = load(str(models["gen"]))
    params = {**pipe.png_parameters("a", 0, pipe.settings(2)), "warp": 3}
    with pytest.raises(UserInputError, match="does not have: warp"):
        replay.settings_kwargs(params, pipe)


def test_record_roundtrip_is_json(written):
    raw = Image.open(written["edit"]).text["parameters"]
    assert json.loads(raw) == read_parameters(written["edit"])
