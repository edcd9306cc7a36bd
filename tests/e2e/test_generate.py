"""Generation promises: an image is a function of (model, prompt, seed, settings) only."""
import json
import logging

import numpy as np
import pytest

import blinkgen
from blinkgen.errors import ModelLoadError, UserInputError
from blinkgen.pipeline import Request, requests
from blinkgen.pngmeta import read_parameters
from conftest import run_cli


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return blinkgen.load(str(tiny_model_dir))


def arr(im):
    return np.asarray(im)


def test_same_seed_same_image_and_different_seed_differs(gen):
    a = gen.generate("a red circle", n=2, seed=3)
    b = gen.generate("a red circle", n=2, seed=3)
    assert all(np.array_equal(arr(x), arr(y)) for x, y in zip(a, b))
    assert not np.array_equal(arr(a[0]), arr(a[1]))  # seeds 3 and 4


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp2m", "euler_a"])
def test_batch_invariance(gen, sampler):
    s = gen.settings(steps=3, sampler=sampler)
    alone = gen.sample([Request("a blue square", 11)], s).images[0]
    mixed = gen.sample(requests(["two green triangles on a black background", "a blue square", "x"], [5, 11, 2]),
                       s).images[1]
    assert np.array_equal(arr(alone), arr(mixed))


def test_euler_a_is_a_function_of_the_seed_and_differs_from_the_ode(gen):
    """The stochastic sampler draws each step's noise from the image's own seed: repeatable,
    different per seed, different from the deterministic Euler path, and an img2img request
    (cut schedule, fewer steps) works too."""
    from PIL import Image

    g = gen
    s = g.settings(steps=4, sampler="euler_a")
    a = g.sample(requests(["a red circle"] * 2, [3, 4]), s).images
    b = g.sample(requests(["a red circle"] * 2, [3, 4]), s).images
    assert all(np.array_equal(arr(x), arr(y)) for x, y in zip(a, b))
    assert not np.array_equal(arr(a[0]), arr(a[1]))
    ode = g.sample([Request("a red circle", 3)], g.settings(steps=4, sampler="euler")).images[0]
    assert not np.array_equal(arr(a[0]), arr(ode))
    init = Image.new("RGB", (g.image_size, g.image_size), (200, 30, 30))
    edit = [Request("a red circle", 3, init_image=init, strength=0.5)]
    e1, e2 = g.sample(edit, s).images[0], g.sample(edit, s).images[0]
    assert np.array_equal(arr(e1), arr(e2)) and not np.array_equal(arr(e1), arr(a[0]))


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_text_encoding_is_bit_identical_to_one_at_a_time(threads):
    """A server encodes all new prompts of a batch in one pass; each prompt's states must be
    exactly what it gets alone, wherever it sits in a batch of any size."""
    import torch
    from blinkgen.text.encoder import shared_encoder

    enc = shared_encoder("cpu")
    prompts = [f"{c} {s} number {i}" for i, (c, s) in enumerate(
        (c, s) for c in ("red", "a tiny green", "blue") for s in ("circle", "cat with a hat", "flag of peru", "x"))]
    prompts += ["a grinning face with big eyes and a very long caption that goes on " * 2]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        alone = [enc.encode_fixed([p], 32) for p in prompts]
        for order in (prompts, prompts[::-1], prompts[:3] + prompts * 3):
            batch = enc.encode_fixed(order, 32)
            for i, p in enumerate(order):
                a = alone[prompts.index(p)]
                assert torch.equal(batch.states[i : i + 1], a.states) and torch.equal(batch.pooled[i : i + 1], a.pooled)
                assert torch.equal(batch.mask[i : i + 1], a.mask)
    finally:
        torch.set_num_threads(old)


def test_batch_invariance_with_fresh_prompt_encodings(gen):
    s = gen.settings(steps=3)
    gen.memo.rows.clear()
    alone = gen.sample([Request("a purple hexagon", 7)], s).images[0]
    gen.memo.rows.clear()
    mixed = gen.sample(requests(["three yellow stars", "a purple hexagon", "an orange heart", "y"], [1, 7, 2, 3]),
                       s).images[1]
    assert np.array_equal(arr(alone), arr(mixed))


def test_save_load_gives_bit_identical_images(gen, tmp_path):
    gen.save(tmp_path / "copy")
    again = blinkgen.load(str(tmp_path / "copy"))
    for x, y in zip(gen.generate("a pizza", n=2, seed=1), again.generate("a pizza", n=2, seed=1)):
        assert np.array_equal(arr(x), arr(y))


@pytest.mark.parametrize("kwargs, msg", [
    (dict(sampler="ddim"), "unknown sampler"),
    (dict(steps=0), "steps must be between"),
    (dict(steps=10_000), "steps must be between"),
    (dict(steps=2.5), "steps must be an integer"),
    (dict(guidance=-1.0), "guidance must be between"),
    (dict(guidance=float("nan")), "guidance must be a number"),
    (dict(n=0), "n must be between"),
    (dict(n=100_000), "n must be between"),
    (dict(seed=-1), "seed must be"),
])
def test_bad_arguments_get_clear_errors(gen, kwargs, msg):
    with pytest.raises(UserInputError, match=msg):
        gen.generate("a red apple", **kwargs)


def test_empty_prompt_is_rejected(gen):
    with pytest.raises(UserInputError, match="non-empty"):
        gen.generate("   ")


def test_long_prompt_is_truncated_with_a_warning(gen, caplog):
    with caplog.at_level(logging.WARNING):
        ims = gen.generate("a red circle " * 40, steps=2)
    assert len(ims) == 1 and "truncated" in caplog.text


def test_missing_and_corrupt_model_folders(tmp_path, tiny_model_dir):
    with pytest.raises(ModelLoadError, match="no model named"):
        blinkgen.load(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError) as e:  # it lists what `blinkgen models` lists (regression: it
        blinkgen.load("nope")                 # also named the evaluator and captioner, not generators)
    assert f"are {', '.join(blinkgen.api.embedded_models())} (blinkgen models)" in str(e.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        blinkgen.load(str(bad))
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        blinkgen.load(str(bad))
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="corrupt or not safetensors"):
        blinkgen.load(str(broken))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    cfg["dit"]["hidden"] = 96
    shutil.copytree(tiny_model_dir, tmp_path / "mismatch")
    (tmp_path / "mismatch" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="do not match"):
        blinkgen.load(str(tmp_path / "mismatch"))


def test_cli_generate_writes_pngs_with_parameters(tiny_model_dir, tmp_path):
    r = run_cli("generate", "a grinning face", "--model", tiny_model_dir, "-n", 3, "--seed", 5,
                "--steps", 2, "--sampler", "heun", "--outdir", tmp_path / "out")
    files = sorted((tmp_path / "out").glob("*.png"))
    assert len(files) == 3
    p = read_parameters(files[0])
    assert p["prompt"] == "a grinning face" and p["sampler"] == "heun" and p["steps"] == 2
    assert p["seed"] in (5, 6, 7) and "blinkgen_version" in p and p["model"] == "tiny"
    run_cli("generate", "a grinning face", "--model", tiny_model_dir, "-n", 4, "--grid", "-o", tmp_path / "g.png",
            "--steps", 2)
    from PIL import Image
    assert Image.open(tmp_path / "g.png").size[0] > 64


@pytest.mark.parametrize("args, msg", [
    (["--sampler", "nope"], "unknown sampler"),
    (["--steps", "0"], "steps must be between"),
    (["-n", "0"], "-n must be between"),
    (["--model", "/definitely/not/here"], "no model named"),
])
def test_cli_errors_are_one_line(tiny_model_dir, args, msg):
    model = [] if "--model" in args else ["--model", str(tiny_model_dir)]
    r = run_cli("generate", "a cat", *model, *args, check=False)
    assert r.returncode == 2
    assert msg in r.stderr and "Traceback" not in r.stderr


def test_embedded_models_lists_generators_only():
    """`blinkgen models` lists what `generate --model` accepts: the shipped evaluator sits in the
    same weights folder but is not a generator."""
    from blinkgen.api import WEIGHTS_DIR, embedded_models

    names = embedded_models()
    assert "default" in names and "evaluator" not in names
    assert (WEIGHTS_DIR / "evaluator" / "config.json").is_file()


def test_prompt_memo_is_bounded_and_still_correct(gen, monkeypatch):
    """A server sees unboundedly many prompts: the encoding memo must stay capped, and a batch
    that overflows it must still get every prompt's own encoding."""
    import torch

    monkeypatch.setattr(gen.memo, "capacity", 5)
    gen.memo.rows.clear()
    prompts = [f"a red circle number {i}" for i in range(9)]
    cond, _ = gen.encode_prompts(prompts[:4])
    cond2, _ = gen.encode_prompts(prompts[3:])  # 6 new + the null prompt: overflows the cap
    assert len(gen.memo.rows) <= 7 and torch.equal(cond.states[3], cond2.states[0])
    alone, _ = gen.encode_prompts([prompts[8]])
    assert torch.equal(alone.states[0], cond2.states[5])


def test_the_text_encoder_loads_at_the_first_prompt_not_with_the_model(tiny_model_dir):
    """Importing transformers' BERT costs seconds of a cold CLI call (text/encoder.py): a command
    refused after the model loads (an existing output file, a bad setting) must not pay it, and
    the first prompt must. Checked in a fresh process, where nothing has imported it yet."""
    import subprocess
    import sys

    from conftest import CHILD_ENV

    code = (f"import sys, blinkgen; p = blinkgen.load({str(tiny_model_dir)!r}); "
            "bert = 'transformers.models.bert.modeling_bert'; before = bert in sys.modules; "
            "p.generate('a red circle', seed=0, steps=1); print(before, bert in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=CHILD_ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True"]
