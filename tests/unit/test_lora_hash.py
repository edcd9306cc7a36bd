"""A LoRA adapter's `lora_hash` covers its weights and the adapter_config.json fields that change
its images (train/lora_hash.py): editing lora_alpha, r or target_modules changes the hash (and,
through the merge cache, the image), while fields that change nothing and peft's arbitrary order
of target_modules do not; a PNG recorded with the older weights-only hash still replays bit for
bit, and one recorded with either form is refused once the adapter's weights change."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import blinkgen
from blinkgen import cli
from blinkgen.modelio import weights_hash
from blinkgen.pngmeta import read_parameters
from blinkgen.train.lora_hash import adapter_hashes, adapter_sha256, canonical_json, recorded_matches, weights_only
from conftest import make_tiny
from lora_helpers import make_adapter

PROMPT = "a zorbo icon"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny("diffusion", tmp_path_factory.mktemp("lora-hash") / "base", seed=0)


@pytest.fixture
def adapter(base, tmp_path):
    return make_adapter(base, tmp_path / "run" / "model", seed=1)


def edit_config(folder, **changes) -> None:
    """Rewrite the adapter's adapter_config.json with `changes` (what a user editing it by hand does)."""
    f = folder / "adapter_config.json"
    cfg = json.loads(f.read_text())
    cfg.update(changes)
    f.write_text(json.dumps(cfg, indent=2))


def weights_only_png(src, dst) -> None:
    """A copy of a PNG whose lora_hash is the weights-only form older blinkgens recorded."""
    params = read_parameters(src)
    params["lora_hash"] = weights_hash(params["lora"])
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.dumps(params, sort_keys=True))
    Image.open(src).save(dst, pnginfo=info)


@pytest.mark.parametrize("change", [{"lora_alpha": 16.0}, {"r": 4}, {"use_rslora": True},
                                    {"target_modules": ["blocks.0.attn.q"]}])
def test_a_config_field_that_changes_the_output_changes_the_hash(adapter, change):
    before = adapter_sha256(adapter)
    edit_config(adapter, **change)
    assert adapter_sha256(adapter) != before
    assert weights_only(adapter) == weights_hash(adapter)  # the weights alone: unchanged


def test_fields_that_change_nothing_and_the_order_of_target_modules_do_not(adapter):
    before = adapter_sha256(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    edit_config(adapter, peft_version="9.9.9", inference_mode=False, lora_dropout=0.5, use_bdlora=None,
                target_modules=list(reversed(cfg["target_modules"])))
    assert adapter_sha256(adapter) == before


def test_the_hash_is_the_weights_hash_and_the_canonical_config(adapter):
    import hashlib

    cfg = {"r": 2, "lora_alpha": 2.0, "target_modules": ["b", "a"], "use_dora": False, "alpha_pattern": {},
           "peft_version": "0.21.2", "layer_replication": None}
    assert canonical_json(cfg) == '{"lora_alpha":2.0,"r":2,"target_modules":["a","b"]}'
    config = json.loads((adapter / "adapter_config.json").read_text())
    want = hashlib.sha256(f"{weights_hash(adapter)}\0{canonical_json(config)}".encode()).hexdigest()
    assert adapter_sha256(adapter) == want


def test_either_recorded_form_matches_and_neither_after_retraining(base, adapter):
    full, weights = adapter_hashes(adapter)
    assert full != weights and recorded_matches(full, adapter) and recorded_matches(weights, adapter)
    make_adapter(base, adapter, seed=2)
    assert not recorded_matches(full, adapter) and not recorded_matches(weights, adapter)


def test_an_edited_alpha_changes_the_image_a_pipeline_draws(base, adapter):
    """The merge cache is keyed by the hash: an edited config is merged afresh, as a fresh load does."""
    pipe = blinkgen.load(str(base))
    before = np.asarray(pipe.generate(PROMPT, seed=5, steps=2, lora=str(adapter))[0])
    edit_config(adapter, lora_alpha=16.0)
    after = np.asarray(pipe.generate(PROMPT, seed=5, steps=2, lora=str(adapter))[0])
    fresh = np.asarray(blinkgen.load(str(base)).generate(PROMPT, seed=5, steps=2, lora=str(adapter))[0])
    assert np.array_equal(after, fresh) and not np.array_equal(before, after)


def draw(base, adapter, out) -> None:
    assert cli.main(["generate", PROMPT, "--model", str(base), "--lora", str(adapter), "--seed", "5",
                     "--steps", "2", "-o", str(out)]) == 0


def test_a_png_records_the_full_hash_and_an_edited_config_is_refused(base, adapter, tmp_path, capsys):
    png = tmp_path / "z.png"
    draw(base, adapter, png)
    assert read_parameters(png)["lora_hash"] == adapter_sha256(adapter) != weights_hash(adapter)
    edit_config(adapter, lora_alpha=16.0)
    capsys.readouterr()
    assert cli.main(["generate", "--from", str(png), "--model", str(base), "-o", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "has changed since" in err and "adapter_config.json" in err and "\n" not in err.strip()


def test_a_png_with_the_old_weights_only_hash_still_replays(base, adapter, tmp_path, capsys):
    png, old = tmp_path / "z.png", tmp_path / "old.png"
    draw(base, adapter, png)
    weights_only_png(png, old)
    capsys.readouterr()
    assert cli.main(["generate", "--from", str(old), "--model", str(base), "-o", str(tmp_path / "r1.png")]) == 0
    assert f"reproduced {old} bit for bit" in capsys.readouterr().err
    make_adapter(base, adapter, seed=2)  # the weights change: the old form still catches that
    assert cli.main(["generate", "--from", str(old), "--model", str(base), "-o", str(tmp_path / "r2.png")]) == 2
    assert "has changed since" in capsys.readouterr().err
