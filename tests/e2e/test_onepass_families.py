"""The GAN and VAE families end to end through the real CLI, in real processes: tiny training runs
in pixel and latent space, generation from the trained folder (CLI and Python give the same bytes),
SIGKILL + --resume ending bit-identical to an uninterrupted run (weights and every optimizer),
batch invariance of trained models, and the 32x32 "small" preset of the founding documents."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import blinkgen
from blinkgen.pipeline import Request
from conftest import CHILD_ENV, run_cli

pytestmark = pytest.mark.slow
FAMILIES = ["gan", "vae"]
OPTIMIZERS = {"gan": ["discriminator", "generator"], "vae": ["model"]}


def train_args(family, out, steps, preset="tiny", extra=()):
    return ["train", "--family", family, "--data", "shapes:48", "--size", 32, "--preset", preset, "--out", out,
            "--steps", steps, "--batch-size", 8, "--eval-every", 40, "--ckpt-every", 5, "--sample-every", 0,
            "--log-every", 5, "--lr", "1e-3", *extra]


def weights(run) -> dict:
    return load_file(str(run / "model" / "model.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> dict:
    """One tiny run per family and space, through the CLI (latent space on the tiny diffusion
    model's autoencoder)."""
    root = tmp_path_factory.mktemp("onepass")
    out = {}
    for fam in FAMILIES:
        run_cli(*train_args(fam, root / fam, 10, extra=("--sample-every", 10, "--eval-every", 5)))
        run_cli(*train_args(fam, root / f"{fam}-latent", 6, preset="tiny-latent",
                            extra=("--autoencoder", tiny_model_dir / "autoencoder")))
        out[fam], out[f"{fam}-latent"] = root / fam, root / f"{fam}-latent"
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_trains_and_generates_through_the_cli(trained, family, tmp_path):
    run = trained[family]
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["family"] == family and cfg["space"] == "pixel" and cfg["training"]["steps"] == 10
    ck = run / "checkpoints" / "step-00000010"
    assert sorted(p.name for p in ck.glob("optimizer.*")) == [f"optimizer.{n}.safetensors" for n in OPTIMIZERS[family]]
    assert (run / "samples" / "step-00000010.png").is_file() and list((run / "tb").iterdir())
    history = [json.loads(line) for line in (run / "val_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [5, 10] and all(np.isfinite(h["val_loss"]) for h in history)
    png = tmp_path / "x.png"
    knob = {"gan": ("--truncation", "0.7"), "vae": ("--temperature", "0.5")}[family]
    run_cli("generate", "two red circles", "--model", run / "model", "-o", png, "--seed", 7, *knob)
    with Image.open(png) as im:
        params = json.loads(im.text["parameters"])
        px = np.asarray(im.convert("RGB"))
    assert params["prompt"] == "two red circles" and params["seed"] == 7 and params["steps"] == 1
    assert params["sampler"] == {"gan": "onepass", "vae": "prior"}[family]
    assert params[knob[0][2:]] == float(knob[1])
    pipe = blinkgen.load(str(run / "model"))
    want = pipe.generate("two red circles", seed=7, **{knob[0][2:]: float(knob[1])})[0]
    assert np.array_equal(px, np.asarray(want))


@pytest.mark.parametrize("family", FAMILIES)
def test_latent_space_model_trains_and_keeps_its_autoencoder(trained, family):
    folder = trained[f"{family}-latent"] / "model"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["space"] == "latent" and (folder / "autoencoder" / "model.safetensors").is_file()
    pipe = blinkgen.load(str(folder))
    assert pipe.space.side == 8 and pipe.generate("a red circle", seed=1)[0].size == (32, 32)


@pytest.mark.parametrize("space", ["", "-latent"])
@pytest.mark.parametrize("family", FAMILIES)
def test_trained_models_are_batch_invariant(trained, family, space):
    pipe = blinkgen.load(str(trained[family + space] / "model"))
    prompts = ["a red circle", "two blue squares", "a small green triangle", "a red circle", "one yellow star"]
    reqs = [Request(p, 10 + i) for i, p in enumerate(prompts)]
    s = pipe.settings()
    batch = pipe.sample(reqs, s).images
    for i in (0, 3, 4):  # alone, and inside a batch of two of other requests
        alone = pipe.sample([reqs[i]], s).images[0]
        pair = pipe.sample([reqs[(i + 1) % 5], reqs[i]], s).images[1]
        assert np.array_equal(np.asarray(alone), np.asarray(batch[i]))
        assert np.array_equal(np.asarray(pair), np.asarray(batch[i]))
    assert not np.array_equal(np.asarray(batch[0]), np.asarray(batch[3]))  # same prompt, other seed


@pytest.mark.parametrize("family", FAMILIES)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, family):
    ref = tmp_path / "ref"
    run_cli(*train_args(family, ref, 60))
    cut = tmp_path / "cut"
    p = subprocess.Popen([sys.executable, "-m", "blinkgen.cli", *map(str, train_args(family, cut, 60))],
                         env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = cut / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not latest.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(latest.read_text().strip().split("-")[1])
    assert killed_at < 60 and not (cut / "model").exists()
    run_cli(*train_args(family, cut, 60), "--resume")
    assert same_tensors(weights(ref), weights(cut))
    for name in OPTIMIZERS[family]:
        f = f"checkpoints/step-00000060/optimizer.{name}.safetensors"
        assert same_tensors(load_file(str(ref / f)), load_file(str(cut / f))), name


@pytest.mark.parametrize("family", FAMILIES)
def test_small_preset_is_the_32px_shapes_recipe(tmp_path, family):
    """The README's small-image recipe, a few steps of it: the preset exists, trains on 32x32
    shapes in pixel space and writes a 32 px model."""
    out = tmp_path / "small"
    run_cli("train", "--family", family, "--preset", "small", "--data", "shapes:40", "--size", 32, "--out", out,
            "--steps", 2, "--batch-size", 4, "--eval-every", 0, "--sample-every", 0, "--ckpt-every", 2)
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["space"] == "pixel" and cfg["image_size"] == 32 and cfg["preset"] == "small"


@pytest.mark.parametrize("family", FAMILIES)
def test_latent_preset_without_an_autoencoder_is_a_one_line_error(tmp_path, family):
    r = run_cli(*train_args(family, tmp_path / "x", 2, preset="tiny-latent"), check=False)
    assert r.returncode == 2 and "--autoencoder" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*train_args(family, tmp_path / "y", 2, preset="XXL"), check=False)
    assert r.returncode == 2 and "unknown" in r.stderr and "Traceback" not in r.stderr
