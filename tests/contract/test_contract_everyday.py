"""The everyday settings of the pipeline contract (issue 16), for every registered family, mode and
sampler: a family that lists "negative_prompt" in `supports` must let the negative prompt change
its guided images, keep them batch-invariant and record it; one that lists "variation" must give
the base image exactly at strength 0 and the variation seed's image exactly at strength 1. A family
that lists neither refuses them with a one-line UserInputError."""
from __future__ import annotations

import numpy as np
import pytest

from blinkgen.errors import UserInputError
from blinkgen.pipeline import Request, requests
from expected_values import PROMPTS, TINY_STEPS, TinyPipelines, cases

CASES = cases()
IDS = [f"{f}/{m}/{s}" for f, m, s in CASES]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory) -> TinyPipelines:
    return TinyPipelines(tmp_path_factory.mktemp("contract-everyday"))


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def settings(pipe, sampler, **kw):
    """Guidance 4 where the family has classifier-free guidance; the one-pass families (gan, vae)
    allow only 1 (off), so they get their default."""
    guidance = 4.0 if pipe.max_guidance >= 4.0 else pipe.defaults.guidance
    return pipe.settings(steps=min(TINY_STEPS, pipe.max_steps), sampler=sampler, guidance=guidance, **kw)


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_negative_prompt(pipes, family, mode, sampler):
    pipe = pipes(family, mode)
    if "negative_prompt" not in pipe.supports:
        with pytest.raises(UserInputError, match="negative_prompt"):
            settings(pipe, sampler, negative_prompt="red")
        return
    plain = settings(pipe, sampler)
    neg = settings(pipe, sampler, negative_prompt="a blue square")
    assert neg.negative_prompt == "a blue square" and neg.to_dict()["negative_prompt"] == "a blue square"
    assert settings(pipe, sampler, negative_prompt="  ") == plain  # blank = none
    reqs = requests(PROMPTS, [3, 4])
    a, b = pipe.sample(reqs, plain), pipe.sample(reqs, neg)
    assert not same(a.images[:1], b.images[:1]), "the negative prompt changed nothing"
    if sampler != "sjd":  # speculative decoding's passes depend on what it accepts
        assert a.network_calls == b.network_calls  # it replaces the null prompt: no extra pass
    alone = pipe.sample([Request(PROMPTS[1], 4)], neg)
    assert same(alone.images, b.images[1:])  # still batch-invariant
    assert pipe.png_parameters(PROMPTS[0], 3, neg)["negative_prompt"] == "a blue square"
    with pytest.raises(UserInputError, match="negative_prompt"):
        settings(pipe, sampler, negative_prompt=3)
    # at guidance 1 there is no unconditional branch: the negative prompt cannot matter
    one = pipe.settings(steps=min(TINY_STEPS, pipe.max_steps), sampler=sampler, guidance=1.0)
    one_neg = pipe.settings(steps=min(TINY_STEPS, pipe.max_steps), sampler=sampler, guidance=1.0, negative_prompt="x")
    assert same(pipe.sample(reqs, one).images, pipe.sample(reqs, one_neg).images)


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_variation_seed(pipes, family, mode, sampler):
    pipe = pipes(family, mode)
    s = settings(pipe, sampler)
    if "variation" not in pipe.supports or sampler == "sjd":
        with pytest.raises(UserInputError, match="variation"):
            pipe.sample([Request("a", 0, variation_seed=1, variation_strength=0.5)], s)
        return
    p = PROMPTS[0]
    base, other = pipe.sample([Request(p, 5)], s).images, pipe.sample([Request(p, 77)], s).images
    assert same(pipe.sample([Request(p, 5, variation_seed=77, variation_strength=0.0)], s).images, base)
    assert same(pipe.sample([Request(p, 5, variation_seed=77, variation_strength=1.0)], s).images, other)
    mixed = pipe.sample([Request(PROMPTS[1], 1), Request(p, 5, variation_seed=77, variation_strength=0.5),
                         Request(p, 5)], s)
    half = mixed.images[1:2]
    assert not same(half, base) and not same(half, other)
    assert same(mixed.images[2:], base)  # a varied batch-mate changes nothing
    assert same(pipe.sample([Request(p, 5, variation_seed=77, variation_strength=0.5)], s).images, half)
    params = pipe.png_parameters(p, 5, s, Request(p, 5, variation_seed=77, variation_strength=0.5))
    assert (params["variation_seed"], params["variation_strength"]) == (77, 0.5)


@pytest.mark.parametrize("bad, word", [({"variation_seed": 1}, "both"), ({"variation_strength": 0.5}, "both"),
                                       ({"variation_seed": -1, "variation_strength": 0.5}, "variation_seed"),
                                       ({"variation_seed": 1, "variation_strength": 1.5}, "variation_strength"),
                                       ({"variation_seed": True, "variation_strength": 0.5}, "variation_seed")])
def test_bad_variation_is_one_line_error(pipes, bad, word):
    pipe = pipes("diffusion", "diffusion")
    with pytest.raises(UserInputError, match=word) as e:
        pipe.sample([Request("a", 0, **bad)], pipe.settings(steps=1))
    assert "\n" not in str(e.value)
