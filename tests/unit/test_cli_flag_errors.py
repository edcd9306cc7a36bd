"""The CLI's errors name its flags, not the API's field names (cli_flags.py): `--negative`, not
negative_prompt; `--lora-scale`, `--guidance-interval`, `--variation-seed`, `--variation-strength`
(and vary's `--strength`); a flag the model's family has no setting for is refused naming the
flag. A value read from a PNG's record keeps its API name, and the library and server keep theirs.

In this process through the real CLI (cli.main) on a tiny random model."""
from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin

import blinkgen
from blinkgen import cli
from blinkgen.errors import UserInputError
from conftest import make_tiny
from lora_helpers import make_adapter

LONG = "x" * 2100  # past pipeline.MAX_PROMPT_CHARS
NOT_UTF8 = "caf\udce9"  # what Python makes of the Latin-1 byte 0xE9 in argv (PEP 383)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("flag-errors")
    base = make_tiny("diffusion", root / "base", seed=0)
    adapter = make_adapter(base, root / "a" / "model", seed=1)
    png = root / "p.png"
    assert cli.main(["generate", "a", "--model", str(base), "--steps", "2", "-o", str(png)]) == 0
    return {"base": str(base), "adapter": str(adapter), "png": str(png), "root": root}


def error_of(capsys, *argv) -> str:
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("flags, want", [
    (["--negative", LONG, "--guidance", "3"], "error: --negative is 2100 characters; the limit is 2000"),
    (["--negative", NOT_UTF8, "--guidance", "3"], "error: --negative is not UTF-8 text: byte 0xe9 at character 3"),
    (["--lora", "ADAPTER", "--lora-scale", "9"], "error: --lora-scale must be a number in [-4, 4], got 9.0"),
    (["--guidance-interval", "2,3"], "error: --guidance-interval must satisfy 0 <= lo <= hi <= 1"),
    (["--guidance-interval", "abc"], "error: --guidance-interval must be two numbers lo,hi in [0, 1]"),
    (["--variation-seed", "-1", "--variation-strength", "0.3"], "error: --variation-seed must be between 0 and"),
    (["--variation-seed", str(2**63 - 1), "--variation-strength", "0.3", "-n", "2"],
     f"error: --variation-seed {2**63 - 1} with n=2 needs seeds up to"),
    (["--variation-seed", "1", "--variation-strength", "3"], "error: --variation-strength must be between 0.0 and 1.0"),
    (["--truncation", "0.5"], "error: the diffusion model 'base' takes no --truncation"),
    (["--temperature", "0.5"], "error: the diffusion model 'base' takes no --temperature"),
])
def test_generate_errors_name_the_flag(setup, capsys, flags, want):
    flags = [setup["adapter"] if f == "ADAPTER" else f for f in flags]
    err = error_of(capsys, "generate", "a", "--model", setup["base"], "--steps", "2", *flags,
                   "-o", setup["root"] / "never.png")
    assert err.startswith(want), err
    for api in ("negative_prompt", "lora_scale", "guidance_interval", "variation_seed", "variation_strength",
                "unknown setting"):
        assert api not in err


def test_a_negative_on_a_family_without_one_names_the_flag(tmp_path, capsys):
    gan = make_tiny("gan", tmp_path / "gan")
    err = error_of(capsys, "generate", "a", "--model", gan, "--negative", "red", "-o", tmp_path / "x.png")
    assert err == "error: the gan model 'gan' takes no --negative"


def test_edit_and_vary_errors_name_their_flags(setup, capsys):
    edit = ["edit", setup["png"], "b", "--model", setup["base"], "--steps", "2", "-o", setup["root"] / "e.png"]
    assert error_of(capsys, *edit, "--lora", setup["adapter"], "--lora-scale", "7").startswith(
        "error: --lora-scale must be a number in [-4, 4]")
    vary = ["vary", setup["png"], "--model", setup["base"], "--steps", "2", "-o", setup["root"] / "v.png"]
    assert error_of(capsys, *vary, "--strength", "3") == "error: --strength must be between 0.0 and 1.0, got 3.0"
    assert error_of(capsys, *vary, "--variation-seed", "-3").startswith("error: --variation-seed must be between")


def test_grid_serve_and_eval_name_their_flags(setup, capsys):
    err = error_of(capsys, "grid", "a", "--model", setup["base"], "--negative", NOT_UTF8, "--x", "steps=1,2",
                   "-o", setup["root"] / "g.png")
    assert err.startswith("error: --negative is not UTF-8 text")
    for cmd in (["serve", "--model", setup["base"], "--port", "1"],
                ["eval", "--model", setup["base"], "--data", setup["root"] / "none", "--out", setup["root"] / "ev"]):
        err = error_of(capsys, *cmd, "--lora", setup["adapter"], "--lora-scale", "9")
        assert err.startswith("error: --lora-scale must be a number in [-4, 4]"), err


def test_a_recorded_value_keeps_its_api_name(setup, tmp_path, capsys):
    """--from a PNG whose record holds a bad negative prompt: the user gave no --negative."""
    from blinkgen.pngmeta import read_parameters

    params = {**read_parameters(setup["png"]), "negative_prompt": LONG}
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.dumps(params))
    bad = tmp_path / "bad.png"
    Image.open(setup["png"]).save(bad, pnginfo=info)
    err = error_of(capsys, "generate", "--from", bad, "--model", setup["base"], "-o", tmp_path / "r.png")
    assert err.startswith("error: negative_prompt is 2100 characters")


def test_the_library_keeps_its_api_names(setup):
    pipe = blinkgen.load(setup["base"])
    with pytest.raises(UserInputError, match=r"^negative_prompt is 2100 characters"):
        pipe.settings(negative_prompt=LONG)
    with pytest.raises(UserInputError, match=r"^lora_scale must be"):
        pipe.settings(lora=setup["adapter"], lora_scale=9)
