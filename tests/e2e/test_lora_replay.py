"""Replaying a PNG drawn with a LoRA adapter: the PNG records the adapter's weights hash
(`lora_hash`), so when the adapter at that path has changed since (another adapter trained into
the same folder, or a resumed fine-tune) `generate --from` says so, with both hashes, instead of
blaming the CPU's arithmetic; --any-model draws it with the adapter as it is now and names the
change; a PNG from before the hash was recorded replays as before. Also: a pipeline that merged an
adapter once does not keep drawing the old one after the folder changes (the merge the PNG's hash
describes is the one that drew it), and --any-model with another base names the model's weights.

The commands run in this process through the real CLI (cli.main) on a tiny random model with
adapters made without training (lora_helpers.make_adapter)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import blinkgen
from blinkgen import cli
from blinkgen.modelio import weights_hash
from blinkgen.pngmeta import read_parameters
from blinkgen.train.lora_hash import adapter_sha256
from conftest import make_tiny
from lora_helpers import make_adapter

STEPS = ["--steps", "2"]
PROMPT = "a zorbo icon"


def blinkgen_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny("diffusion", tmp_path_factory.mktemp("lora-replay") / "base", seed=0)


@pytest.fixture
def z2(base, tmp_path):
    """runs/z2 holding adapter A, and z2.png drawn with it: {"run", "png", "hash"}."""
    run = tmp_path / "runs" / "z2"
    make_adapter(base, run / "model", seed=1)
    png = tmp_path / "z2.png"
    assert blinkgen_cli("generate", PROMPT, "--model", base, "--lora", run, "--seed", 5, *STEPS, "-o", png) == 0
    return {"run": run, "png": png, "hash": adapter_sha256(run / "model")}


def retrain(base, z2) -> str:
    """Another adapter into the same folder (what a second finetune --out, or --resume, does)."""
    make_adapter(base, z2["run"] / "model", seed=2)
    now = adapter_sha256(z2["run"] / "model")
    assert now != z2["hash"]
    return now


def old_png(src, dst) -> None:
    """A copy of a PNG whose record has no lora_hash, as blinkgen wrote them before recording it."""
    params = {k: v for k, v in read_parameters(src).items() if k != "lora_hash"}
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.dumps(params, sort_keys=True))
    Image.open(src).save(dst, pnginfo=info)


def test_a_lora_png_records_the_adapter_hash(z2):
    from blinkgen.train.lora import adapter_sha256 as reexported

    params = read_parameters(z2["png"])
    assert params["lora"] == str((z2["run"] / "model").resolve())
    assert params["lora_hash"] == z2["hash"] == reexported(z2["run"])  # weights + config: train/lora_hash.py


def test_an_unchanged_adapter_replays_bit_for_bit(z2, base, tmp_path, capsys):
    assert blinkgen_cli("generate", "--from", z2["png"], "--model", base, "-o", tmp_path / "r.png") == 0
    assert f"reproduced {z2['png']} bit for bit" in capsys.readouterr().err


def test_a_changed_adapter_is_named_not_the_cpu(z2, base, tmp_path, capsys):
    now = retrain(base, z2)
    capsys.readouterr()
    assert blinkgen_cli("generate", "--from", z2["png"], "--model", base, "-o", tmp_path / "r.png") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and "CPU" not in err
    assert f"LoRA adapter at {(z2['run'] / 'model').resolve()}" in err and "has changed since" in err
    assert z2["hash"][:12] in err and now[:12] in err and "--any-model" in err
    assert not (tmp_path / "r.png").exists()


def test_any_model_draws_with_the_changed_adapter_and_names_the_change(z2, base, tmp_path, capsys):
    now = retrain(base, z2)
    capsys.readouterr()
    out = tmp_path / "r.png"
    assert blinkgen_cli("generate", "--from", z2["png"], "--model", base, "--any-model", "-o", out) == 0
    err = capsys.readouterr().err
    assert "not reproduced bit for bit" in err and "CPU's arithmetic" not in err
    assert "LoRA adapter" in err and "has changed since" in err and z2["hash"][:12] in err and now[:12] in err
    assert read_parameters(out)["lora_hash"] == now  # the new image records the adapter that drew it


def test_an_old_png_without_the_hash_replays_as_before(z2, base, tmp_path, capsys):
    old = tmp_path / "old.png"
    old_png(z2["png"], old)
    capsys.readouterr()
    assert blinkgen_cli("generate", "--from", old, "--model", base, "-o", tmp_path / "r1.png") == 0
    assert f"reproduced {old} bit for bit" in capsys.readouterr().err
    retrain(base, z2)
    assert blinkgen_cli("generate", "--from", old, "--model", base, "-o", tmp_path / "r2.png") == 0
    err = capsys.readouterr().err
    # it cannot know the adapter changed, but it does not claim the same weights either
    assert "not reproduced bit for bit" in err and "records no lora_hash" in err and "CPU's arithmetic" not in err


def test_a_pipeline_draws_the_adapter_now_in_the_folder(z2, base):
    """An adapter merged once is merged again when its folder holds other weights (the merge cache
    is keyed by the weights' hash): a long-lived pipeline (the server) draws what its PNGs record."""
    pipe = blinkgen.load(str(base))
    before = pipe.generate(PROMPT, seed=5, steps=2, lora=str(z2["run"]))[0]
    retrain(base, z2)
    after = pipe.generate(PROMPT, seed=5, steps=2, lora=str(z2["run"]))[0]
    fresh = blinkgen.load(str(base)).generate(PROMPT, seed=5, steps=2, lora=str(z2["run"]))[0]
    assert np.array_equal(np.asarray(after), np.asarray(fresh))
    assert not np.array_equal(np.asarray(before), np.asarray(after))


def test_any_model_with_another_base_names_the_model_weights(z2, base, tmp_path, capsys):
    plain = tmp_path / "plain.png"
    assert blinkgen_cli("generate", PROMPT, "--model", base, "--seed", 5, *STEPS, "-o", plain) == 0
    other = make_tiny("diffusion", tmp_path / "other", seed=1)
    capsys.readouterr()
    assert blinkgen_cli("generate", "--from", plain, "--model", other, "--any-model", "-o", tmp_path / "r.png") == 0
    err = capsys.readouterr().err
    assert "not reproduced bit for bit" in err and "CPU's arithmetic" not in err
    assert f"model weights {weights_hash(base)[:12]}... then, {weights_hash(other)[:12]}... now" in err
