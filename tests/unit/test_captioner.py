"""The captioner's pieces: the word vocabulary round-trips captions; KV-cached greedy decoding
equals decoding by full forward passes; beam search of width 1 is greedy and never prefers a worse
finished caption; the shapes comparison reads scenes through the grammar's parser."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.data import shapes as S
from blinkgen.eval.caption_metrics import canonical, scene_agreement, summarise
from blinkgen.models.captioner import Captioner, captioner_config
from blinkgen.sampling.text_decode import beam_decode, greedy_decode
from blinkgen.text.vocab import SPECIALS, WordVocab, split_words

CAPTIONS = ["grinning face", "flag: Japan", "a small red circle left of a large blue square on a gray background",
            "Bosnia & Herzegovina", "woman-bouncing-ball: medium-light skin tone", "two green squares"]
WORDS = sorted({w.strip() for c in CAPTIONS for w in split_words(c) if w.strip().isalnum()})


def test_vocabulary_round_trips_the_training_captions():
    v = WordVocab.build(CAPTIONS)
    assert tuple(v.tokens[:4]) == SPECIALS and len(set(v.tokens)) == len(v)
    for c in CAPTIONS:
        assert v.decode(v.encode(c)) == c
    assert v.encode("purple unicorn")[-1] == v.unk and v.decode([v.bos, *v.encode("flag: Japan"), v.eos, 7]) == "flag: Japan"
    b = v.batch(["grinning face", "two green squares"], 2)  # cut to 2 words
    assert b.shape == (2, 4) and b[0, 0] == v.bos and b[0, 3] == v.eos and v.decode(b[1]) == "two green"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8), st.sampled_from(["", ":", ",", " &"]))
def test_any_sentence_of_known_words_round_trips(words, punct):
    text = " ".join(words[:1]) + punct + "".join(" " + w for w in words[1:])
    v = WordVocab.build(CAPTIONS + [text])
    assert v.decode(v.encode(text)) == " ".join(text.split())


def tiny_captioner(seed=0, vocab=50):
    torch.manual_seed(seed)
    return Captioner(captioner_config("tiny", vocab, feature_dims=[12, 8], feature_tokens=[1, 4], image_size=16,
                                      max_text=10)).eval()


def features(B, seed=1):
    """(frozen feature groups, uint8 images) of B random pictures."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 1, 12, generator=g), torch.randn(B, 4, 8, generator=g)], \
        torch.randint(0, 256, (B, 3, 16, 16), generator=g, dtype=torch.uint8)


def greedy_by_full_passes(model, feats, images, bos, eos, max_len):
    """The reference: re-run the whole sequence for every new word (no cache)."""
    B = feats[0].shape[0]
    seq = torch.full((B, 1), bos)
    done = torch.zeros(B, dtype=torch.bool)
    out = []
    for _ in range(max_len):
        logits = model.logits(feats, images, torch.cat([seq, seq[:, :1]], dim=1))[:, -1]  # predicts after the last real token
        tok = logits.argmax(-1).masked_fill(done, eos)
        out.append(tok)
        done |= tok == eos
        if done.all():
            break
        seq = torch.cat([seq, tok[:, None]], dim=1)
    return torch.stack(out, dim=1)


@torch.no_grad()
def test_cached_greedy_decoding_equals_full_forward_passes():
    for seed in range(3):
        m = tiny_captioner(seed)
        f, im = features(5, seed)
        got = greedy_decode(m.llama, m.prefix(f, im), 1, 2, 11)
        want = greedy_by_full_passes(m, f, im, 1, 2, 11)
        assert torch.equal(got, want)


@torch.no_grad()
def test_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well():
    m = tiny_captioner(3)
    f, im = features(4, 3)
    pre = m.prefix(f, im)
    g = greedy_decode(m.llama, pre, 1, 2, 11)
    assert torch.equal(beam_decode(m.llama, pre, 1, 2, 11, beams=1), g)

    def mean_logp(seq):
        toks = torch.cat([torch.full((len(seq), 1), 1), seq], dim=1)
        lp = m.logits(f, im, torch.cat([toks, toks[:, :1]], dim=1))[:, :-1].float().log_softmax(-1)  # (B, L, V)
        per = lp.gather(-1, seq[..., None])[..., 0]
        is_eos = (seq == 2).int()
        n = (is_eos.cumsum(1) - is_eos) == 0  # every word up to and including the first <eos>
        return (per * n).sum(1) / n.sum(1)
    wide = beam_decode(m.llama, pre, 1, 2, 11, beams=4)
    assert (mean_logp(wide) >= mean_logp(g) - 1e-5).all()


def test_decoding_does_not_depend_on_batch_mates():
    m = tiny_captioner(4)
    f, im = features(6, 4)
    all_ = beam_decode(m.llama, m.prefix(f, im), 1, 2, 11, beams=3)
    one = beam_decode(m.llama, m.prefix([x[2:3] for x in f], im[2:3]), 1, 2, 11, beams=3)
    assert torch.equal(all_[2, :one.shape[1]], one[0])


def test_scene_agreement_reads_captions_through_the_grammar():
    truth = "a small red circle left of a large blue square on a gray background"
    mirrored = "a large blue square right of a small red circle on a gray background"
    r = scene_agreement(mirrored, truth)
    assert r["parses"] and r["same"] and all(r[a] for a in ("colour", "shape", "count", "size", "relation", "background"))
    r = scene_agreement("a small red circle above a large blue square on a white background", truth)
    assert r["parses"] and not r["same"] and r["colour"] and not r["relation"] and not r["background"]
    r = scene_agreement("a small red circle", truth)  # one object missing: its attributes are wrong
    assert r["parses"] and not r["colour"] and r["relation"] is False
    r = scene_agreement("grinning face", truth)
    assert not r["parses"] and r["colour"] is False
    assert scene_agreement("anything", "grinning face") is None
    both = "two green squares and a red circle"
    assert scene_agreement("a red circle and two green squares", both)["same"]
    s = summarise([scene_agreement(mirrored, truth), scene_agreement("grinning face", truth)])
    assert s["n"] == 2 and s["same"] == 0.5 and s["parses"] == 0.5 and s["n_relation"] == 2


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000))
def test_every_scene_agrees_with_its_own_paraphrases(seed):
    import numpy as np

    scene = S.sample_scene(np.random.default_rng(seed))
    caps = S.paraphrases(scene)
    for c in caps:
        assert scene_agreement(c, c)["same"]
    assert canonical(S.parse_caption(caps[0])) == canonical(scene)
    if scene.relation:  # the mirrored sentence is the same scene
        assert scene_agreement(caps[-1], caps[0])["same"]
