"""The LLM family's parallel (MaskGIT-style) mode: schedule, masking, cached passes, generator,
folder round trip and training through the shared loop."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import blinkgen
from blinkgen.families.ar.pipeline import ARPipeline, sample_masked
from blinkgen.pipeline import Request, requests
from conftest import make_tiny
from blinkgen.errors import UserInputError
from blinkgen.models.ar_t2i import fit_text
from blinkgen.models.llama import KVCache
from blinkgen.models.masked_t2i import random_masking
from blinkgen.sampling.ar import DecodeSettings, full_key_mask
from blinkgen.sampling.maskgit import masking_schedule
from blinkgen.speed.fused_llama import fused_view


@given(n=st.integers(1, 300), data=st.data())
@settings(max_examples=200, deadline=None)
def test_schedule_unmasks_every_slot_at_least_one_per_pass(n, data):
    k = data.draw(st.integers(1, n))
    sch = masking_schedule(k, n)
    assert len(sch) == k and sch[-1] == 0
    prev = n
    for m in sch:
        assert 0 <= m < prev  # each pass decides at least one new slot
        prev = m


def test_schedule_follows_the_cosine_and_rejects_bad_step_counts():
    assert masking_schedule(8, 64) == [math.floor(64 * math.cos(math.pi / 2 * (k + 1) / 8)) for k in range(8)]
    for bad in (0, 65):
        with pytest.raises(ValueError, match="steps"):
            masking_schedule(bad, 64)


@given(st.integers(1, 64), st.integers(0, 2**31 - 1))
@settings(max_examples=100, deadline=None)
def test_random_masking_hides_the_cosine_share(n, seed):
    g = torch.Generator().manual_seed(seed)
    ur, uo = torch.rand(5, generator=g), torch.rand(5, n, generator=g)
    m = random_masking(ur, uo)
    want = torch.ceil(torch.cos(ur * math.pi / 2) * n).long().clamp(1, n)
    assert torch.equal(m.sum(1), want)
    assert torch.equal(m, random_masking(ur.clone(), uo.clone()))  # a pure function of its draws
    # the hidden slots are those with the smallest order draws
    for row, o in zip(m, uo):
        assert o[row].max() < o[~row].min() if (~row).any() else True


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return blinkgen.load(str(make_tiny("ar", tmp_path_factory.mktemp("mg") / "tiny-mg", objective="masked")))


def test_cached_pass_equals_the_full_bidirectional_forward(gen):
    """The sampler's pass (prefix K/V cached once, image rows non-causal) must give the training
    forward's logits for any canvas."""
    m = gen.model
    s, mk = fit_text(gen.encode_prompts(["a red circle", "two blue squares"]), m.cfg.text_len)
    N, V = m.cfg.n_tokens, m.cfg.llama.vocab_size
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, V, (2, N), generator=g)
    masked = torch.rand(2, N, generator=g) < 0.5
    ref = m.logits(tok, s, mk, masked)  # (2, N, V)
    pre, pm = m.prefix(s, mk)
    P = pre.shape[1]
    km = full_key_mask(pm, N)
    for net in (fused_view(m.llama), m.llama):
        cache = KVCache.allocate(m.cfg.llama, 2, P + N, pre.dtype, "cpu")
        net.forward_cached(pre, torch.arange(P), cache, km)
        # twice: the second pass overwrites the image slots' keys/values in place
        for _ in range(2):
            h = net.forward_cached(m.image_embeds(tok, masked), torch.arange(P, P + N), cache, km, causal=False)
            torch.testing.assert_close(net.head(h), ref, rtol=1e-5, atol=1e-5)
    # and the image slots really see each other: changing a later slot changes an earlier logit
    tok2 = tok.clone()
    tok2[:, -1] = (tok[:, -1] + 1) % V
    unmasked_last = masked.clone()
    unmasked_last[:, -1] = False
    a = m.logits(tok, s, mk, unmasked_last)[:, 0]
    b = m.logits(tok2, s, mk, unmasked_last)[:, 0]
    assert not torch.allclose(a, b)


def test_generator_is_seeded_batch_invariant_and_deterministic(gen):
    st_ = gen.settings(steps=5)
    res = gen.sample(requests(["a red circle", "a green star"], [3, 4]), st_)
    a = res.images
    b = gen.sample([Request("a green star", 4)], st_).images
    c = gen.sample(requests(["a red circle", "a green star"], [3, 4]), st_).images
    assert np.array_equal(np.array(a[1]), np.array(b[0]))
    assert all(np.array_equal(np.array(x), np.array(y)) for x, y in zip(a, c))
    assert res.network_calls == [5, 5]
    other_seed = gen.sample([Request("a red circle", 5)], st_).images
    assert not np.array_equal(np.array(a[0]), np.array(other_seed[0]))


def test_every_slot_is_filled_with_a_valid_token(gen):
    m = gen.model
    for steps in (1, 3, m.cfg.n_tokens):
        toks = gen.sample_tokens(["a red circle"] * 2, [0, 1], gen.settings(steps=steps))
        assert toks.shape == (2, m.cfg.n_tokens)
        assert int(toks.min()) >= 0 and int(toks.max()) < m.cfg.llama.vocab_size


def test_greedy_one_pass_is_the_argmax_of_the_all_masked_forward(gen):
    """One pass with temperature 0 must put every slot at the argmax of the guided logits."""
    from dataclasses import replace

    m = gen.model
    gen2 = ARPipeline(m, gen.config, device="cpu")
    gen2.decode_settings = replace(gen2.decode_settings, temperature=0.0)
    toks = gen2.sample_tokens(["a red circle"], [0], gen2.settings(steps=1, guidance=1.0))
    s, mk = fit_text(gen2.encode_prompts(["a red circle"]), m.cfg.text_len)
    ref = m.logits(torch.zeros_like(toks), s, mk).argmax(-1)
    assert torch.equal(toks, ref)


def test_masked_model_rejects_sequential_samplers_and_too_many_steps(gen):
    with pytest.raises(UserInputError, match="maskgit"):
        gen.settings(sampler="cached")
    with pytest.raises(UserInputError, match="steps"):
        gen.settings(steps=gen.model.cfg.n_tokens + 1)
    with pytest.raises(ValueError):
        DecodeSettings(temperature=-1)


def test_folder_round_trip(gen, tmp_path):
    out = gen.save(tmp_path / "copy")
    again = blinkgen.load(str(out))
    assert again.model.cfg.objective == "masked" and again.samplers == ("maskgit",)
    torch.testing.assert_close(again.model.mask_emb, gen.model.mask_emb)
    a = gen.sample([Request("a red circle", 1)], gen.settings()).images
    b = again.sample([Request("a red circle", 1)], again.settings()).images
    assert np.array_equal(np.array(a[0]), np.array(b[0]))


def test_model_level_sampling_matches_the_generator(gen):
    """sample_masked (the model-level entry, as sample_causal is for the causal mode) never falls
    back to causal decoding: it gives the generator's tokens for the same seed and settings."""
    from dataclasses import replace

    s = replace(gen.decode_settings, guidance=gen.defaults.guidance)
    toks = sample_masked(gen.model, gen.encode_prompts(["a red circle"]), [torch.Generator().manual_seed(3)], s,
                         steps=5, choice_temperature=gen.choice_temperature)
    assert torch.equal(toks, gen.sample_tokens(["a red circle"], [3], gen.settings(steps=5)))
