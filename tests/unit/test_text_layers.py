"""The encoder depth a diffusion model reads (`--text-layers`, issue 17): the states after k of
MiniLM's 6 layers are exactly the full model's hidden_states[k]; the depth is part of the text
cache key (the full depth keeps the key existing caches were written under); it is checked where
it is set; a trained model records it and its pipeline, distillations and fine-tunes read it."""
import json
from pathlib import Path

import pytest
import torch

from blinkgen.errors import UserInputError
from blinkgen.text.encoder import TEXT_LAYERS, TextEncoder, captions_key, check_layers, encode_cached
from blinkgen.train.config import TrainConfig

CAPS = ["a red circle left of a blue square", "two green triangles", "flag: Japan in twemoji style"]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_states_after_k_layers_are_the_full_models_hidden_state(k):
    full, part = TextEncoder(), TextEncoder(layers=k)
    assert len(part.model.encoder.layer) == k and len(full.model.encoder.layer) == TEXT_LAYERS
    tok = full.tokenizer(CAPS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = full.model(**tok, output_hidden_states=True).hidden_states[k]
    b = part.encode(CAPS)
    assert torch.allclose(b.states, hidden, atol=1e-5)
    m = b.mask.unsqueeze(-1).float()
    assert torch.allclose(b.pooled, torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1), atol=1e-5)
    fixed = part.encode_fixed(CAPS[:1], 32)  # generation's path: same states, zero padded
    n = int(fixed.mask[0].sum())
    assert torch.allclose(fixed.states[0, :n], hidden[0, :n], atol=1e-5) and not fixed.states[0, n:].any()


def test_layers_are_checked():
    for bad in (0, 7, True, "3", 2.0):
        with pytest.raises(UserInputError):
            check_layers(bad)
    assert check_layers(4) == 4


def test_cache_key_holds_the_depth_and_the_full_depth_keeps_its_old_key(tmp_path):
    assert captions_key(["a red circle", "two blue squares"], 32) == "e7a797b9c62ef2fd"  # as written before depths existed
    assert captions_key(CAPS, 32, TEXT_LAYERS) == captions_key(CAPS, 32)
    assert captions_key(CAPS, 32, 3) != captions_key(CAPS, 32)
    six, three = encode_cached(CAPS, tmp_path), encode_cached(CAPS, tmp_path, layers=3)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and not torch.equal(six.states, three.states)
    assert torch.equal(encode_cached(CAPS, tmp_path, layers=3).states, three.states)  # read back


def test_config_takes_a_depth_for_new_diffusion_models_only():
    assert TrainConfig(family="diffusion", text_layers=3).validate().text_layers == 3
    for bad in ({"text_layers": 0}, {"text_layers": 7}, {"family": "gan", "text_layers": 3},
                {"family": "diffusion", "task": "lora", "base": "default", "text_layers": 3}):
        with pytest.raises(UserInputError):
            TrainConfig(**bad).validate()


@pytest.mark.slow
def test_a_model_records_its_depth_and_its_student_reads_the_same(tmp_path, tiny_model_dir):
    import blinkgen
    from conftest import run_cli

    out = tmp_path / "run"
    run_cli("train", "--family", "diffusion", "--data", "shapes:24", "--size", "32", "--preset", "tiny",
            "--autoencoder", tiny_model_dir / "autoencoder", "--out", out, "--steps", 2, "--batch-size", 4,
            "--eval-every", 0, "--sample-every", 0, "--ckpt-every", 1, "--text-layers", 3, "--t-shift", 2,
            "--t-high-share", 0.5, "--t-high-from", 0.99)
    recorded = json.loads((out / "train_config.json").read_text())
    assert recorded["t_high_share"] == 0.5 and recorded["t_high_from"] == 0.99
    final = json.loads((out / "model" / "config.json").read_text())
    assert final["text_layers"] == 3 and final["schedule_shift"] == 2.0
    import subprocess
    import sys
    script = Path(__file__).parents[2] / "scripts" / "export_checkpoint.py"  # a mid-run export samples alike
    subprocess.run([sys.executable, str(script), str(out), "--out", str(tmp_path / "mid"), "--styles", ""], check=True)
    mid = json.loads((tmp_path / "mid" / "config.json").read_text())
    assert (mid["text_layers"], mid["schedule_shift"]) == (3, 2.0)
    pipe = blinkgen.load(str(out / "model"))
    assert pipe.text.layers == 3
    r = run_cli("distill", "--from", out / "model", "--data", "shapes:16", "--out", tmp_path / "student",
                "--steps", 2, "--base-steps", 4, "--train-steps", 2, "--batch-size", 4, "--eval-every", 0,
                "--ckpt-every", 0)
    student = Path(r.stdout.strip().splitlines()[-1])
    assert json.loads((student / "config.json").read_text())["text_layers"] == 3
    assert blinkgen.load(str(student)).text.layers == 3
    assert "text_layers" not in json.loads((tiny_model_dir / "config.json").read_text())  # 6: the key is absent
    assert blinkgen.load(str(tiny_model_dir)).text.layers == TEXT_LAYERS
