"""LoRA fine-tuning end to end (issue 13): a tiny fine-tune through the real CLI writes peft's
adapter files and a config naming its base; `--lora` generation is the same bytes from the CLI, the
Python API and the server; an adapter of another base is refused (Python, CLI, server start);
scale 0 is the base model; --merge writes a model folder that draws what --lora draws; resume is
exact; the AR family's Llama takes adapters too."""
from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

import blinkgen
from blinkgen.errors import UserInputError
from blinkgen.serve.commands import load_generators
from conftest import make_tiny, run_cli
from conftest_serve import live_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import mascot  # noqa: E402  (bench/mascot.py: the procedural concept)

pytestmark = pytest.mark.slow
PROMPT = mascot.NAME
FT = ["--steps", 6, "--batch-size", 4, "--eval-every", 3, "--sample-every", 6, "--threads", 1, "--lr", "1e-2",
      "--rank", 4]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(np.asarray(x.convert("RGB")), np.asarray(y.convert("RGB")))
                                    for x, y in zip(a, b))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lora")
    base = make_tiny("diffusion", root / "base", seed=0)
    data = mascot.make_folder(root / "mascot", n=6, size=32)
    out = root / "run"
    r = run_cli("finetune", "--from", base, "--data", data, "--out", out, "--merge", *FT)
    return {"root": root, "base": base, "data": data, "out": out, "stdout": r.stdout}


def test_finetune_writes_a_peft_adapter_naming_its_base(run):
    ad = run["out"] / "model"
    assert str(ad) in run["stdout"]
    assert sorted(p.name for p in ad.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "config.json"]
    peft_cfg = json.loads((ad / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == 4
    keys = list(load_file(str(ad / "adapter_model.safetensors")))
    assert keys and all(k.startswith("base_model.model.blocks.") and ".lora_" in k for k in keys)
    cfg = json.loads((ad / "config.json").read_text())
    from blinkgen.train.lora import weights_sha256

    assert cfg["family"] == "lora" and cfg["network"] == "denoiser" and cfg["rank"] == 4
    assert cfg["base"]["weights_sha256"] == weights_sha256(run["base"]) and cfg["base"]["family"] == "diffusion"
    assert cfg["concept"] == [PROMPT]
    # the one loop's run folder: validation history, checkpoints, sample grids of the concept
    hist = [json.loads(x) for x in (run["out"] / "val_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [3, 6] and all("val_loss" in h for h in hist)
    assert (run["out"] / "samples" / "step-00000006.png").is_file()
    assert (run["out"] / "checkpoints" / "latest").is_file() and (run["out"] / "best" / "ema.safetensors").is_file()


def test_lora_images_are_the_same_from_cli_python_and_server(run, tmp_path):
    run_cli("generate", PROMPT, "--model", run["base"], "--lora", run["out"], "--seed", 3, "-n", 2,
            "--outdir", tmp_path)
    cli = [Image.open(p) for p in sorted(tmp_path.glob("*.png"))]
    assert len(cli) == 2 and json.loads(cli[0].text["parameters"])["lora"] == str((run["out"] / "model").resolve())
    pipe = blinkgen.load(str(run["base"]))
    py = pipe.generate(PROMPT, n=2, seed=3, lora=str(run["out"]))
    assert same(sorted(cli, key=lambda im: json.loads(im.text["parameters"])["seed"]), py)
    base_images = pipe.generate(PROMPT, n=2, seed=3)
    assert not same(py, base_images)  # the adapter changes the drawing
    gens = load_generators([str(run["base"])], loras=[str(run["out"])])
    assert list(gens) == ["base", "base+run"]
    with live_server(gens) as live:
        r = live.client.post("/v1/images/generations", json={"prompt": PROMPT, "n": 2, "seed": 3, "model": "base+run",
                                                             "response_format": "b64_json"})
        assert r.status_code == 200, r.text
        served = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in r.json()["data"]]
        plain = live.client.post("/v1/images/generations", json={"prompt": PROMPT, "n": 2, "seed": 3, "model": "base",
                                                                 "response_format": "b64_json"}).json()["data"]
    assert same(served, py)
    assert same([Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in plain], base_images)


def test_scale_zero_is_the_base_model_and_the_scale_is_recorded(run):
    pipe = blinkgen.load(str(run["base"]))
    s = pipe.settings(lora=str(run["out"]), lora_scale=0.0)
    assert s.lora_scale == 0.0 and s.to_dict()["lora_scale"] == 0.0
    assert same(pipe.generate(PROMPT, n=2, seed=1, lora=str(run["out"]), lora_scale=0.0), pipe.generate(PROMPT, n=2, seed=1))
    assert pipe.settings(lora=str(run["out"])).lora_scale == 1.0
    with pytest.raises(UserInputError, match="lora_scale needs"):
        pipe.settings(lora_scale=0.5)
    with pytest.raises(UserInputError, match="lora_scale must be"):
        pipe.settings(lora=str(run["out"]), lora_scale=9.0)


def test_merge_writes_a_model_that_draws_what_the_adapter_draws(run):
    merged = run["out"] / "merged"
    cfg = json.loads((merged / "config.json").read_text())
    assert cfg["family"] == "diffusion" and cfg["merged_lora"]["scale"] == 1.0
    from blinkgen.train.lora_hash import adapter_sha256
    assert cfg["merged_lora"]["lora_hash"] == adapter_sha256(run["out"])  # names it if the folder moves
    a = blinkgen.load(str(merged)).generate(PROMPT, n=2, seed=5)
    b = blinkgen.load(str(run["base"])).generate(PROMPT, n=2, seed=5, lora=str(run["out"]))
    assert same(a, b)


def test_an_adapter_of_another_base_is_refused(run, tmp_path):
    other = make_tiny("diffusion", tmp_path / "other", seed=1)  # same architecture, other weights
    pipe = blinkgen.load(str(other))
    with pytest.raises(UserInputError, match="was trained on base model 'base'.*not on 'other'"):
        pipe.settings(lora=str(run["out"]))
    r = run_cli("generate", PROMPT, "--model", other, "--lora", run["out"], "-o", tmp_path / "x.png", check=False)
    assert r.returncode == 2 and "was trained on base model" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(UserInputError, match="not among the served models"):
        load_generators([str(other)], loras=[str(run["out"])])
    with pytest.raises(UserInputError, match="--lora-scale needs --lora"):
        load_generators([str(other)], lora_scale=0.5)
    ar = make_tiny("ar", tmp_path / "ar")
    with pytest.raises(UserInputError, match="is for a diffusion model"):
        blinkgen.load(str(ar)).settings(lora=str(run["out"]))
    r = run_cli("generate", PROMPT, "--model", run["base"], "--lora", tmp_path, check=False)
    assert r.returncode == 2 and "not a blinkgen LoRA adapter" in r.stderr


def test_resume_gives_the_uninterrupted_weights(run, tmp_path):
    """Stopped after its first step (a time limit), then --resume to the end: the last checkpoint's
    weights are the uninterrupted run's, bit for bit (the one loop's exact resume)."""
    r = run_cli("finetune", "--from", run["base"], "--data", run["data"], "--out", tmp_path / "r", *FT,
                "--time-limit", "0.001")
    assert "stopping at step 1" in r.stdout + r.stderr
    assert (tmp_path / "r" / "checkpoints" / "step-00000001").is_dir()
    run_cli("finetune", "--from", run["base"], "--data", run["data"], "--out", tmp_path / "r", "--resume", *FT)
    for f in ("ema.safetensors", "model.safetensors"):
        a = load_file(str(tmp_path / "r" / "checkpoints" / "step-00000006" / f))
        b = load_file(str(run["out"] / "checkpoints" / "step-00000006" / f))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_the_ar_llama_takes_adapters(tmp_path, run):
    base = make_tiny("ar", tmp_path / "ar")
    run_cli("finetune", "--from", base, "--data", run["data"], "--out", tmp_path / "ft", *FT)
    keys = list(load_file(str(tmp_path / "ft" / "model" / "adapter_model.safetensors")))
    assert keys and all(".llama.model.layers." in k for k in keys)
    assert any("mlp.gate_proj" in k for k in keys) and any("self_attn.q_proj" in k for k in keys)
    pipe = blinkgen.load(str(base))
    plain = pipe.generate(PROMPT, n=2, seed=0)
    assert same(pipe.generate(PROMPT, n=2, seed=0, lora=str(tmp_path / "ft"), lora_scale=0.0), plain)
    net = pipe.network_for(pipe.settings(lora=str(tmp_path / "ft")))
    moved = [n for (n, p), (_, q) in zip(pipe.model.named_parameters(), net.named_parameters()) if not (p == q).all()]
    assert moved and all(".layers." in n for n in moved)  # only the Llama's projections change
