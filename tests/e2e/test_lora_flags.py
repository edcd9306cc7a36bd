"""--lora beyond plain generation: a replay (`generate --from`) with another adapter, an added one,
a dropped one (`--lora none`) or another strength lists it among its changes, as it does other
overridden settings, and the same adapter (even in another folder) is no change; `edit` and `vary`
take --lora and --lora-scale as generate does, record the adapter (with its lora_hash) in the PNG,
and the result replays (`generate --from` for a variation, the recorded redo command for an
edit); `upscale --lora` is refused saying why.

In this process through the real CLI (cli.main), on a tiny random model with adapters made
without training (lora_helpers.make_adapter)."""
from __future__ import annotations

import shutil
import shlex

import numpy as np
import pytest
from PIL import Image

from blinkgen import cli
from blinkgen.pngmeta import read_parameters
from blinkgen.replay import redo_command
from blinkgen.train.lora_hash import adapter_sha256
from conftest import make_tiny
from lora_helpers import make_adapter

PROMPT = "a zorbo icon"


def run(*argv) -> int:
    return cli.main([str(a) for a in argv])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-flags")
    base = make_tiny("diffusion", root / "base", seed=0)
    a, b = make_adapter(base, root / "a" / "model", seed=1), make_adapter(base, root / "b" / "model", seed=2)
    with_a, plain = root / "with_a.png", root / "plain.png"
    assert run("generate", PROMPT, "--model", base, "--lora", a.parent, "--seed", 5, "--steps", 2, "-o", with_a) == 0
    assert run("generate", PROMPT, "--model", base, "--seed", 5, "--steps", 2, "-o", plain) == 0
    return {"root": root, "base": base, "a": a, "b": b, "with_a": with_a, "plain": plain}


@pytest.mark.parametrize("png, flags, changes", [
    ("with_a", ["--lora", "b"], "lora"),                      # another adapter
    ("plain", ["--lora", "a"], "lora"),                       # one added
    ("with_a", ["--lora", "none"], "lora"),                   # the recorded one dropped
    ("with_a", ["--lora-scale", "0.5"], "lora_scale"),        # the recorded one at another strength
    ("with_a", ["--lora", "b", "--lora-scale", "0.5"], "lora, lora_scale"),
    ("with_a", ["--steps", "3", "--lora", "b"], "steps, lora"),
])
def test_a_replay_with_another_adapter_lists_it_as_a_change(setup, tmp_path, capsys, png, flags, changes):
    flags = [str(setup[f]) if f in ("a", "b") else f for f in flags]
    out = tmp_path / "r.png"
    capsys.readouterr()
    assert run("generate", "--from", setup[png], "--model", setup["base"], *flags, "-o", out) == 0
    err = capsys.readouterr().err
    assert f"replayed {setup[png]} with changes: {changes}\n" in err, err
    assert "bit for bit" not in err
    rec = read_parameters(out)
    if "none" in flags:
        assert "lora" not in rec and "lora_hash" not in rec
    else:
        assert rec["lora_hash"] == adapter_sha256(rec["lora"])


def test_the_same_adapter_given_again_or_moved_is_no_change(setup, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(setup["a"], moved)
    for i, lora in enumerate((setup["a"].parent, moved)):
        capsys.readouterr()
        assert run("generate", "--from", setup["with_a"], "--model", setup["base"], "--lora", lora,
                   "-o", tmp_path / f"r{i}.png") == 0
        assert f"reproduced {setup['with_a']} bit for bit" in capsys.readouterr().err


def test_replacing_a_changed_adapter_is_not_refused_for_the_old_one(setup, tmp_path, capsys):
    """The recorded adapter's folder holds other weights now; a replay with --lora B does not use it."""
    png = tmp_path / "c.png"
    folder = make_adapter(setup["base"], tmp_path / "c" / "model", seed=3)
    assert run("generate", PROMPT, "--model", setup["base"], "--lora", folder, "--steps", 2, "-o", png) == 0
    make_adapter(setup["base"], folder, seed=4)
    capsys.readouterr()
    assert run("generate", "--from", png, "--model", setup["base"], "--lora", setup["b"], "-o", tmp_path / "r.png") == 0
    assert f"replayed {png} with changes: lora" in capsys.readouterr().err


def test_edit_takes_lora_records_it_and_its_redo_command_reproduces_it(setup, tmp_path):
    out, plain = tmp_path / "e.png", tmp_path / "e0.png"
    common = ["edit", setup["plain"], "a red circle", "--model", setup["base"], "--steps", 2, "--seed", 3]
    assert run(*common, "--lora", setup["a"], "--lora-scale", 0.8, "-o", out) == 0
    assert run(*common, "-o", plain) == 0
    rec = read_parameters(out)
    assert rec["lora"] == str(setup["a"].resolve()) and rec["lora_scale"] == 0.8
    assert rec["lora_hash"] == adapter_sha256(setup["a"]) and rec["edit"] == "img2img"
    assert not np.array_equal(pixels(out), pixels(plain))  # the adapter drew it
    argv = shlex.split(redo_command(rec))
    assert argv[:2] == ["blinkgen", "edit"] and "--lora" in argv and "--lora-scale" in argv
    argv = [str(setup["plain"]) if a == setup["plain"].name else a for a in argv[2:]]
    argv[argv.index("--model") + 1] = str(setup["base"])
    assert run("edit", *argv, "-o", tmp_path / "redo.png") == 0
    assert np.array_equal(pixels(tmp_path / "redo.png"), pixels(out))


def test_vary_takes_lora_and_its_variation_replays_bit_for_bit(setup, tmp_path, capsys):
    out = tmp_path / "v.png"
    assert run("vary", setup["plain"], "--model", setup["base"], "--lora", setup["b"], "-n", 1,
               "--variation-seed", 9, "-o", out) == 0
    rec = read_parameters(out)
    assert rec["lora"] == str(setup["b"].resolve()) and rec["lora_hash"] == adapter_sha256(setup["b"])
    assert rec["variation_seed"] == 9
    capsys.readouterr()
    assert run("generate", "--from", out, "--model", setup["base"], "-o", tmp_path / "r.png") == 0
    assert f"reproduced {out} bit for bit" in capsys.readouterr().err


def test_vary_by_img2img_takes_lora_too(setup, tmp_path):
    out = tmp_path / "v.png"
    assert run("vary", setup["plain"], "--img2img", "--prompt", PROMPT, "--model", setup["base"], "--steps", 2,
               "--lora", setup["a"], "-n", 1, "-o", out) == 0
    rec = read_parameters(out)
    assert rec["edit"] == "variation" and rec["lora_hash"] == adapter_sha256(setup["a"])


def test_vary_keeps_the_recorded_adapter_unless_told(setup, tmp_path):
    kept, dropped = tmp_path / "k.png", tmp_path / "d.png"
    assert run("vary", setup["with_a"], "--model", setup["base"], "-n", 1, "--variation-seed", 1, "-o", kept) == 0
    assert run("vary", setup["with_a"], "--model", setup["base"], "-n", 1, "--variation-seed", 1,
               "--lora", "none", "-o", dropped) == 0
    assert read_parameters(kept)["lora"] == str(setup["a"].resolve()) and "lora" not in read_parameters(dropped)


def test_upscale_refuses_lora_saying_why(setup, tmp_path, capsys):
    for flag in ("--lora", "--lora-scale"):
        with pytest.raises(SystemExit) as e:
            run("upscale", setup["plain"], flag, "1", "-o", tmp_path / "u.png")
        err = capsys.readouterr().err
        assert e.value.code == 2 and "usage: blinkgen upscale" in err
        assert f"unrecognized arguments: {flag} 1 ({flag}: upscale runs the upscaler, a model of its own that " \
               "takes no LoRA adapter; --lora is for generate, edit and vary)" in err, err
