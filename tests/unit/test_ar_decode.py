"""AR family decoding: KV cache == full forward, batched CFG == two passes, batch invariance,
a compilable step, and a tiny training loop whose greedy sample reproduces what it memorised."""
import pytest
import torch

from blinkgen.models.ar_t2i import ARTextToImage, ar_config
from blinkgen.families.ar.pipeline import sample_causal
from blinkgen.models.llama import KVCache
from blinkgen.models.tokenizer import TokenizerConfig
from blinkgen.sampling.ar import (DecodeSettings, combine_cfg, decode, decode_no_cache, draw_uniforms,
                                  filtered_probs, next_token, prefill, sample_from_probs)
from blinkgen.speed.compile import compiled_step
from blinkgen.speed.fused_llama import fused_view
from blinkgen.speed.int8 import int8_view
from blinkgen.text.encoder import TextBatch

torch.set_num_threads(1)
TEXT_LEN = 6


def tiny_model(seed: int = 0, sharpen: float = 30.0) -> ARTextToImage:
    """64 image tokens over a 25-code vocabulary. The head is scaled up so logits are well
    separated: greedy ties would otherwise depend on rounding, not on the decode path."""
    torch.manual_seed(seed)
    tok = TokenizerConfig(channels=[8, 16, 16, 16], levels=[5, 5])
    m = ARTextToImage(ar_config("tiny", tokenizer=tok, text_len=TEXT_LEN)).eval()
    with torch.no_grad():
        m.llama.lm_head.weight.mul_(sharpen)
    return m


def text_batch(lengths: list[int], seed: int = 0) -> TextBatch:
    """Encoder-shaped input (B, L, 384) with real padding; prompts of different lengths."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    states = torch.randn(len(lengths), L, 384, generator=g)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    return TextBatch(states, mask, torch.nn.functional.normalize(states.mean(1), dim=-1))


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_cached_decode_equals_full_forward_decode(guidance):
    m = tiny_model()
    for s in (DecodeSettings(temperature=0, guidance=guidance), DecodeSettings(top_k=10, guidance=guidance)):
        pre, pm = m.conditioning(text_batch([3, 6]), s.cfg)
        u = draw_uniforms(gens([1, 2]), 64)
        cached = decode(m.llama, pre, pm, u, s)
        full = decode_no_cache(m.llama, pre, pm, u, s)
        assert torch.equal(cached, full), s
        assert cached.shape == (2, 64) and cached.max() < 25


def test_cfg_batch_doubling_equals_two_separate_passes():
    m = tiny_model()
    s = DecodeSettings(temperature=1.0, top_p=0.9, guidance=4.0)
    text = text_batch([4, 2])
    u = draw_uniforms(gens([5, 6]), 64)
    batched = decode(m.llama, *m.conditioning(text, True), u, s)
    # Reference: conditional and unconditional streams with their own caches, combined per step.
    cond, cmask = m.conditioning(text, False)
    uncond, umask = m.prefix(*m.null_condition(2))
    P, N = cond.shape[1], 64
    streams = []
    with torch.inference_mode():
        for pre, pm in ((cond, cmask), (uncond, umask)):
            km = torch.cat([pm, pm.new_ones(2, N - 1)], 1)
            cache = KVCache.allocate(m.llama.cfg, 2, P + N - 1, torch.float32, "cpu")
            streams.append((cache, km, prefill(m.llama, pre, km, cache)))
        logits = [st[2] for st in streams]
        out = []
        for i in range(N):
            g = logits[1].float() + 4.0 * (logits[0].float() - logits[1].float())  # two passes, combined
            tok = sample_from_probs(filtered_probs(g, s), u[:, i])
            out.append(tok)
            if i < N - 1:
                x = m.llama.embed(tok[:, None])
                logits = [m.llama.head(m.llama.forward_cached(x, torch.tensor([P + i]), c, km))[:, 0]
                          for c, km, _ in streams]
    assert torch.equal(batched, torch.stack(out, 1))
    assert torch.allclose(combine_cfg(torch.tensor([[2.0], [1.0]]), 4.0), torch.tensor([[5.0]]))


def test_a_sample_does_not_depend_on_its_batch_mates():
    m = tiny_model()
    s = DecodeSettings(temperature=1.0, top_k=12, guidance=2.0)
    together = sample_causal(m, text_batch([2, 5, 3], seed=7), gens([10, 11, 12]), s)
    alone = sample_causal(m, text_batch([2, 5, 3], seed=7).index([1]), gens([11]), s)
    assert torch.equal(together[1:2], alone)
    again = sample_causal(m, text_batch([2, 5, 3], seed=7), gens([10, 11, 12]), s)
    assert torch.equal(together, again)  # a seed is an image
    assert not torch.equal(together[0], together[2])


def test_decode_step_compiles_fullgraph():
    """The eager backend still traces with dynamo, so fullgraph=True proves no graph breaks,
    without paying for code generation in a unit test (the bench compiles for real)."""
    m = tiny_model()
    s = DecodeSettings(temperature=1.0, top_k=8, top_p=0.95, guidance=2.0)
    pre, pm = m.conditioning(text_batch([3, 4]), True)
    u = draw_uniforms(gens([3, 4]), 64)
    net = fused_view(m.llama)  # the view the pipeline compiles
    compiled = decode(net, pre, pm, u, s, step=compiled_step(backend="eager"))
    assert torch.equal(compiled, decode(net, pre, pm, u, s))


def test_token_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert filtered_probs(logits, DecodeSettings(temperature=0)).argmax() == 1
    k2 = filtered_probs(logits, DecodeSettings(top_k=2))
    assert (k2[0, [0, 2]] == 0).all() and torch.isclose(k2.sum(), torch.tensor(1.0))
    p = logits.softmax(-1)[0]  # sorted mass: 0.64, 0.24, ... -> top_p 0.7 keeps two tokens
    tp = filtered_probs(logits, DecodeSettings(top_p=0.7))
    assert (tp[0] > 0).tolist() == [False, True, False, True] and p[1] < 0.7
    # inverse CDF: each uniform lands in its token's interval; zero-mass tokens never win
    probs = torch.tensor([[0.5, 0.0, 0.5]]).expand(4, -1)
    assert sample_from_probs(probs, torch.tensor([0.0, 0.49, 0.5, 0.999])).tolist() == [0, 0, 2, 2]
    with pytest.raises(ValueError):
        DecodeSettings(top_p=0.0)
    assert next_token(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.zeros(1),
                      DecodeSettings(temperature=0, guidance=0.0)).item() == 0  # guidance 0 = uncond


def test_training_memorises_and_greedy_sampling_reproduces():
    """End to end: frozen tokenizer -> CE training -> cached greedy decode -> decode to pixels."""
    m = tiny_model(sharpen=1.0).train()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    text = text_batch([3, 5], seed=1)
    target = m.tokenizer.encode_uint8(images)  # (2, 64)
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    m.cfg.cond_drop = 0.0
    for _ in range(130):
        loss, logs = m.training_loss(images, text, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()
    assert all(p.grad is None for p in m.tokenizer.parameters())
    m.eval()
    toks = sample_causal(m, text, gens([0, 1]), DecodeSettings(temperature=0))
    assert torch.equal(toks, target)
    imgs = m.tokens_to_images(toks)
    assert imgs.shape == (2, 3, 64, 64) and imgs.dtype == torch.uint8
    # the caption drop replaces the condition with the learned null caption
    m.cfg.cond_drop = 1.0
    _, logs = m.training_loss(images, text, generator=g)
    assert logs["cond_dropped"] == 1.0


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_fused_decode_equals_unfused_decode(guidance):
    """The fused inference view yields the tokens of the module-by-module reference path."""
    m = tiny_model()
    for s in (DecodeSettings(temperature=0, guidance=guidance), DecodeSettings(top_p=0.9, guidance=guidance)):
        pre, pm = m.conditioning(text_batch([5, 2]), s.cfg)
        u = draw_uniforms(gens([3, 4]), 64)
        assert torch.equal(decode(fused_view(m.llama), pre, pm, u, s), decode(m.llama, pre, pm, u, s)), s


def test_greedy_shortcut_is_the_inverse_cdf_of_the_one_hot():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 25, generator=g)
    logits[:8, 3] = logits[:8, 7] = 9.0  # ties: both rules take the first maximum
    u = torch.rand(64, generator=g)
    s = DecodeSettings(temperature=0)
    assert torch.equal(next_token(logits, u, s), sample_from_probs(filtered_probs(logits, s), u))
    cfg = DecodeSettings(temperature=0, guidance=2.5)
    both = torch.randn(64, 25, generator=g)
    assert torch.equal(next_token(both, u[:32], cfg),
                       sample_from_probs(filtered_probs(combine_cfg(both, 2.5), cfg), u[:32]))


def test_int8_decode_runs_and_mostly_agrees():
    """The int8 rung decodes through the same loop; on a well-separated model its greedy tokens
    mostly match fp32 (the bench reports the exact agreement on real models)."""
    m = tiny_model()
    s = DecodeSettings(temperature=0, guidance=2.0)
    pre, pm = m.conditioning(text_batch([3, 6]), True)
    u = draw_uniforms(gens([1, 2]), 64)
    ref = decode(m.llama, pre, pm, u, s)
    q = decode(int8_view(m.llama), pre, pm, u, s)
    assert q.shape == ref.shape and (q == ref).float().mean() > 0.5
