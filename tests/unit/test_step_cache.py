"""Step caching (speed/step_cache.py): full passes are the plain network, the schedule of full and
cached passes depends only on the call count, images stay a function of their own request, and
bad settings are one-line errors."""
import math

import numpy as np
import pytest
import torch

import blinkgen
from blinkgen.errors import UserInputError
from blinkgen.models.denoisers import from_preset
from blinkgen.pipeline import Request, requests
from blinkgen.speed.step_cache import StepCache, parse_cache


def _net(preset="tiny"):
    torch.manual_seed(0)
    if preset == "uvit-4":  # U-ViT with two in and two out blocks: one shallow pair, one deep
        from blinkgen.models.uvit import UViT, UViTConfig
        net = UViT(UViTConfig(hidden=64, depth=4, heads=2, stem_channels=16))
    else:
        net = from_preset(preset, 4, 16)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def _inputs(B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 4, 16, 16, generator=g), torch.rand(B, generator=g), torch.randn(B, 5, 384, generator=g),
            torch.ones(B, 5, dtype=torch.bool), torch.randn(B, 384, generator=g))


@pytest.mark.parametrize("preset", ["tiny", "uvit-4"])
@torch.no_grad()
def test_full_passes_are_the_plain_network_and_cached_ones_reuse_the_deep_part(preset):
    net = _net(preset)
    cache = StepCache(net, interval=3, shallow=1)
    a, b = _inputs(seed=0), _inputs(seed=1)
    assert torch.equal(cache(*a), net(*a))  # call 0: full
    # call 1: cached, same input -> the same residual added back: the plain output to float rounding
    torch.testing.assert_close(cache(*a), net(*a), atol=1e-5, rtol=1e-5)
    cached = cache(*b)  # call 2: cached with another input: not the plain output
    assert not torch.allclose(cached, net(*b))
    assert torch.equal(cache(*b), net(*b))  # call 3: full again
    assert (cache.calls, cache.full_calls) == (4, 2)


def test_cache_settings_are_parsed_and_refused_in_one_line():
    assert parse_cache("deep:2") == (2, 1) and parse_cache("deep:4:2", depth=6) == (4, 2)
    for bad in ("deep", "deep:1", "deep:99", "fast", "deep:2:6", 3):
        with pytest.raises(UserInputError) as e:
            parse_cache(bad, depth=6)
        assert "\n" not in str(e.value)
    with pytest.raises(UserInputError, match="split forward"):
        StepCache(_net("unet-tiny"), 2)
    with pytest.raises(UserInputError, match="shallow"):
        StepCache(_net("uvit-tiny"), 2)  # one in block: nothing deep to reuse
    with pytest.raises(UserInputError, match="shallow"):
        StepCache(_net("tiny"), 2, shallow=2)  # the tiny DiT has two blocks


def test_pipeline_cache_setting(tiny_model_dir):
    pipe = blinkgen.load(str(tiny_model_dir))
    plain = pipe.settings(steps=6, sampler="dpmpp2m")
    cached = pipe.settings(steps=6, sampler="dpmpp2m", cache="deep:3")
    assert cached.to_dict()["cache"] == "deep:3"  # recorded in a PNG's parameters
    reqs = requests(["a red circle", "two blue squares"], [1, 2])
    res = pipe.sample(reqs, cached)
    assert res.stats == {"full_passes": math.ceil(6 / 3), "cached_passes": 6 - 2} and res.network_calls == [6, 6]
    again = pipe.sample(reqs, cached)
    alone = pipe.sample([Request("two blue squares", 2)], cached)
    px = [np.asarray(im) for im in res.images]
    assert all(np.array_equal(x, np.asarray(y)) for x, y in zip(px, again.images))
    assert np.array_equal(px[1], np.asarray(alone.images[0]))  # batch-mates do not matter
    ref = [np.asarray(im) for im in pipe.sample(reqs, plain).images]
    assert any(not np.array_equal(x, y) for x, y in zip(px, ref))  # the cached passes did change something
    with pytest.raises(UserInputError, match="cache"):
        pipe.settings(cache="deep:1")
