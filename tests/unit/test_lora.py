"""train/lora.py without training: which modules get adapters in every denoiser and the Llama; a
fresh adapter changes nothing (B starts at zero) and merging at scale s adds s * B @ A; the base
hash follows the weights, not the name; malformed adapter folders and settings are one-line
errors; families without adapters refuse the setting."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import blinkgen
from blinkgen.errors import ModelLoadError, UserInputError
from blinkgen.models.ar_t2i import ARTextToImage, ar_config
from blinkgen.models.denoisers import from_preset
from blinkgen.train import lora
from conftest import make_tiny


@pytest.mark.parametrize("preset", ["tiny", "uvit-tiny", "unet-tiny"])
def test_every_denoiser_gets_adapters_on_attention_and_mlp_only(preset):
    net = from_preset(preset, 4, 8)
    names = lora.target_modules(net, "denoiser")
    assert names and all(isinstance(net.get_submodule(n), torch.nn.Linear) for n in names)
    assert any(".mlp." in n for n in names)
    assert any(n.endswith((".q", ".qkv")) for n in names) and any(n.endswith((".kv", "cross.kv")) for n in names)
    assert not any(n.startswith(("t_mlp", "pooled_mlp", "ctx_proj", "mod", "final")) for n in names)


def test_the_llama_gets_adapters_on_its_seven_projections():
    m = ARTextToImage(ar_config("tiny", "tiny"))
    names = lora.target_modules(m, "ar")
    assert len(names) == 7 * m.cfg.llama.n_layers and all(n.startswith("llama.model.layers.") for n in names)
    assert not any("text_proj" in n or "tokenizer" in n or "lm_head" in n for n in names)


def test_a_fresh_adapter_is_the_identity_and_merging_adds_the_scaled_update(tmp_path):
    torch.manual_seed(0)
    net = from_preset("tiny", 4, 8).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.rand(2)
    ctx, mask, pooled = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 384)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # no zero-initialised outputs: every path counts
        before = net(x, t, ctx, mask, pooled)
    import copy

    pm = lora.wrap(copy.deepcopy(net), "denoiser", rank=2)
    assert all(p.requires_grad == (".lora_" in n) for n, p in pm.named_parameters())
    with torch.no_grad():
        assert torch.equal(pm(x, t, ctx, mask, pooled), before)
        for m in pm.modules():  # give B a value so the update is not zero
            if hasattr(m, "lora_B") and "default" in m.lora_B:
                m.lora_B["default"].weight.normal_(0, 0.1)
    folder = tmp_path / "base"
    folder.mkdir()
    base = {"family": "diffusion", "name": "base", "path": str(folder), "weights_sha256": "0" * 64}
    lora.save_adapter(pm, tmp_path / "ad", base, "denoiser")
    ad = lora.read_adapter(tmp_path / "ad")
    half = lora.merged(net, ad, 0.5)
    q = "blocks.0.attn.q"
    layer = pm.base_model.model.get_submodule(q)
    delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight  # alpha = rank: scale 1
    assert torch.allclose(half.get_submodule(q).weight, net.get_submodule(q).weight + 0.5 * delta, atol=1e-6)
    assert torch.equal(lora.merged(net, ad, 0.0).get_submodule(q).weight, net.get_submodule(q).weight)


def test_the_base_hash_follows_the_weights_not_the_name(tmp_path):
    a = make_tiny("diffusion", tmp_path / "a", seed=0)
    shutil.copytree(a, tmp_path / "renamed")
    b = make_tiny("diffusion", tmp_path / "b", seed=1)
    assert lora.weights_sha256(a) == lora.weights_sha256(tmp_path / "renamed") != lora.weights_sha256(b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="holds no weights"):
        lora.weights_sha256(tmp_path / "empty")


def test_malformed_adapters_are_one_line_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):  # a bad argument, like any other
        lora.read_adapter(tmp_path / "nothing")
    d = tmp_path / "ad"
    d.mkdir()
    with pytest.raises(ModelLoadError, match="adapter_model.safetensors is missing"):
        lora.read_adapter(d)
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        (d / f).write_bytes(b"{}")
    (d / "config.json").write_text(json.dumps({"family": "diffusion"}))
    with pytest.raises(ModelLoadError, match="not a blinkgen LoRA adapter config"):
        lora.read_adapter(d)
    (d / "config.json").write_text("{nope")
    with pytest.raises(ModelLoadError, match="corrupt"):
        lora.read_adapter(d)
    with pytest.raises(UserInputError, match="rank"):
        lora.wrap(from_preset("tiny", 4, 8), "denoiser", rank=0)


def test_settings_refuse_adapters_where_they_cannot_apply(tmp_path):
    pipe = blinkgen.load(str(make_tiny("constant", tmp_path / "c")))  # a family without adapters
    with pytest.raises(UserInputError, match="does not support the 'lora' setting"):
        pipe.settings(lora=str(tmp_path))
    with pytest.raises(UserInputError, match="does not support the 'lora_scale' setting"):
        pipe.settings(lora_scale=0.5)
    d = blinkgen.load(str(make_tiny("diffusion", tmp_path / "d")))
    with pytest.raises(ModelLoadError, match="not a blinkgen LoRA adapter"):
        d.settings(lora=str(tmp_path / "c"))
    with pytest.raises(UserInputError, match="lora must be an adapter folder"):
        d.settings(lora=3)
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text(json.dumps({"family": "lora", "base": {"name": "x"}}))
    with pytest.raises(ModelLoadError, match="is a LoRA adapter"):
        blinkgen.load(str(tmp_path / "fake"))
