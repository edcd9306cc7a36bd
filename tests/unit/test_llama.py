"""Our Llama is transformers' Llama: same names, same logits, loadable by from_pretrained."""
import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from blinkgen.models.llama import LLAMA_PRESETS, KVCache, Llama, LlamaConfig, llama_config
from blinkgen.speed.fused_llama import FusedLlama, fused_view
from blinkgen.speed.int8 import int8_view

torch.set_num_threads(1)


def tiny(**kw) -> Llama:
    torch.manual_seed(0)
    return Llama(llama_config("tiny", vocab_size=40, max_seq_len=48, **kw)).eval()


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 4}, {"tie_embeddings": True}])
def test_same_logits_as_transformers(kw):
    m = tiny(**kw)
    hf = LlamaForCausalLM(m.cfg.to_hf_config()).eval()
    hf.load_state_dict(m.hf_state_dict(), strict=not m.cfg.tie_embeddings)
    if m.cfg.tie_embeddings:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, 40, (2, 30))
    with torch.no_grad():
        ours, theirs = m(ids), hf(ids).logits
    assert (ours - theirs).abs().max() < 1e-4


def test_parameter_names_match_transformers_exactly():
    m = tiny()
    hf = LlamaForCausalLM(m.cfg.to_hf_config())
    assert set(m.state_dict()) == set(hf.state_dict())


def test_from_pretrained_reads_our_folder_and_back(tmp_path):
    m = tiny()
    files = m.hf_files()
    (tmp_path / "config.json").write_text(json.dumps(files["config.json"]))
    save_file(files["model.safetensors"], str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    hf = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 40, (1, 25))
    with torch.no_grad():
        assert (hf(ids).logits - m(ids)).abs().max() < 1e-4
    back = Llama.from_hf_files(files["config.json"], files["model.safetensors"])
    assert back.cfg == m.cfg
    # a config written by transformers itself (no blinkgen key) also maps back
    plain = Llama.from_hf_files(hf.config.to_dict(), files["model.safetensors"])
    assert plain.cfg.ffn_dim == m.cfg.ffn_dim and plain.cfg.kv_heads == m.cfg.kv_heads


def test_cached_forward_matches_full_forward_with_padding():
    """Prefill + one-token steps against the static cache == one causal pass, padding masked."""
    m = tiny()
    B, T, P = 2, 20, 8
    x = torch.randn(B, T, m.cfg.dim)
    key_mask = torch.ones(B, T, dtype=torch.bool)
    key_mask[0, 5:P] = False  # sample 0 has a short prompt: slots 5..7 are padding
    with torch.no_grad():
        full = m.forward_embeds(x, key_mask)
        cache = KVCache.allocate(m.cfg, B, T, torch.float32, "cpu")
        steps = [m.forward_cached(x[:, :P], torch.arange(P), cache, key_mask)]
        for i in range(P, T):
            steps.append(m.forward_cached(x[:, i:i + 1], torch.tensor([i]), cache, key_mask))
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5
    # padding really is invisible: changing padded inputs changes no valid position
    x2 = x.clone()
    x2[0, 5:P] = 100.0
    with torch.no_grad():
        full2 = m.forward_embeds(x2, key_mask)
    valid = torch.ones(T, dtype=torch.bool)
    valid[5:P] = False
    assert torch.allclose(full[0, valid], full2[0, valid], atol=1e-5)


def test_presets_and_config_errors():
    for name, cfg in LLAMA_PRESETS.items():
        assert cfg.dim % cfg.n_heads == 0, name
    assert LlamaConfig.from_dict(llama_config("S").to_dict()) == llama_config("S")
    with pytest.raises(ValueError, match="n_kv_heads"):
        LlamaConfig(dim=64, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="unknown Llama size"):
        llama_config("huge")
    with pytest.raises(ValueError, match="exceeds"):
        tiny().forward_embeds(torch.zeros(1, 49, 64))


def _prefill_then_steps(forward, cfg, x, key_mask, P):
    """Hidden states of a prefill of P positions and one-token steps after it, through `forward`."""
    B, T, _ = x.shape
    cache = KVCache.allocate(cfg, B, T, x.dtype, "cpu")
    with torch.no_grad():
        steps = [forward(x[:, :P], torch.arange(P), cache, key_mask)]
        for i in range(P, T):
            steps.append(forward(x[:, i:i + 1], torch.tensor([i]), cache, key_mask))
    return torch.cat(steps, 1), cache


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 4}, {"n_kv_heads": 1}, {"tie_embeddings": True}])
def test_fused_view_equals_the_module_by_module_reference(kw):
    """Fused q/k/v and gate/up, one-flip rotary, one mask per call: same hidden states, same
    cache contents and same logits as the reference path, GQA or not, with padding."""
    m = tiny(**kw)
    B, T, P = 2, 20, 8
    x = torch.randn(B, T, m.cfg.dim)
    key_mask = torch.ones(B, T, dtype=torch.bool)
    key_mask[1, 2:P] = False
    fused, fc = _prefill_then_steps(fused_view(m).forward_cached, m.cfg, x, key_mask, P)
    ref, rc = _prefill_then_steps(m.forward_cached, m.cfg, x, key_mask, P)
    assert (fused - ref).abs().max() < 1e-5
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(fc.k + fc.v, rc.k + rc.v))
    with torch.no_grad():
        assert (fused_view(m).head(fused) - m.head(ref)).abs().max() < 1e-5
    assert isinstance(fused_view(m), FusedLlama) and fused_view(m) is fused_view(m)  # built once
    assert fused_view(fused_view(m)) is fused_view(m)  # a view is already a view


def test_fused_view_follows_the_weights_and_stays_out_of_the_checkpoint():
    """The fused copies are rebuilt after an in-place update, a load_state_dict and a dtype change;
    the checkpoint keeps transformers' layout (no fused keys)."""
    m = tiny()
    keys = set(m.state_dict())
    first = fused_view(m)
    assert set(m.state_dict()) == keys and m.num_params() == sum(p.numel() for p in m.parameters())
    x, km = torch.randn(1, 6, m.cfg.dim), torch.ones(1, 6, dtype=torch.bool)

    def check():
        a, _ = _prefill_then_steps(fused_view(m).forward_cached, m.cfg, x, km, 3)
        b, _ = _prefill_then_steps(m.forward_cached, m.cfg, x, km, 3)
        assert (a - b).abs().max() < 1e-5

    with torch.no_grad():
        m.model.layers[0].self_attn.k_proj.weight.add_(0.5)  # as an optimizer step does
    check()
    assert fused_view(m) is not first
    other = tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.normal_(0, 0.1)
    m.load_state_dict(other.state_dict())
    check()
    m.double()
    x = x.double()
    check()
    assert fused_view(m).layers[0].qkv.weight.dtype == torch.float64


def test_int8_view_is_close_and_leaves_the_source_alone():
    torch.manual_seed(0)
    m = Llama(llama_config("tiny", dim=128, vocab_size=40, max_seq_len=48)).eval()
    q = int8_view(m)
    assert q.layers[0].qkv._get_name() == "DynamicQuantizedLinear" and type(q.lm_head) is torch.nn.Linear
    assert type(m.model.layers[0].self_attn.o_proj) is torch.nn.Linear  # the source keeps fp32 modules
    x, km = torch.randn(2, 12, 128), torch.ones(2, 12, dtype=torch.bool)
    a, _ = _prefill_then_steps(m.forward_cached, m.cfg, x, km, 6)
    b, _ = _prefill_then_steps(q.forward_cached, m.cfg, x, km, 6)
    with torch.no_grad():
        la, lb = m.head(a), q.head(b)
    # int8 weights with per-channel scales: logits move by a small fraction of their spread
    assert (la - lb).abs().max() < 0.05 * la.std(), ((la - lb).abs().max(), la.std())
