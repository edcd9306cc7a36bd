"""sampling/noise.py: slerp of each row, and the variation-seed mixes built on it."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.sampling.noise import slerp, vary_gaussian, vary_uniform


def normal(seed: int, shape=(4, 64)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 2**32), st.floats(0.0, 1.0))
def test_slerp_ends_exact_and_norm_between(sa, sb, t):
    a, b = normal(sa), normal(sb)
    out = slerp(a, b, t)
    assert out.shape == a.shape and out.dtype == torch.float32
    if t == 0.0:
        assert torch.equal(out, a)
    if t == 1.0:
        assert torch.equal(out, b)
    na, nb, no = a.norm(dim=1), b.norm(dim=1), out.norm(dim=1)
    want = (1 - t) * na + t * nb  # the norm moves linearly from |a| to |b|
    assert torch.allclose(no, want, rtol=1e-4, atol=1e-4)


def test_slerp_keeps_a_typical_norm_where_a_straight_mix_shrinks():
    a, b = normal(1, (8, 4096)), normal(2, (8, 4096))
    half = slerp(a, b, 0.5)
    d = math.sqrt(4096)
    assert abs(half.norm(dim=1).mean().item() / d - 1) < 0.03
    assert (0.5 * a + 0.5 * b).norm(dim=1).mean().item() / d < 0.75  # what slerp avoids


def test_slerp_stays_on_the_great_circle():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    out = slerp(a, b, 1 / 3)
    assert torch.allclose(out, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]]), atol=1e-6)


def test_slerp_parallel_rows_mix_linearly_and_bad_input_is_refused():
    a = torch.ones(2, 3)
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)
    assert torch.isfinite(slerp(a, -a, 0.5)).all()
    with pytest.raises(ValueError):
        slerp(a, torch.ones(2, 4), 0.5)
    with pytest.raises(ValueError):
        slerp(a, a, 1.5)


def draw_normal(seeds):
    return torch.stack([torch.randn(3, 4, generator=torch.Generator().manual_seed(s)) for s in seeds])


def draw_uniform(seeds):
    return torch.stack([torch.rand(10, generator=torch.Generator().manual_seed(s)) for s in seeds])


@pytest.mark.parametrize("vary, draw", [(vary_gaussian, draw_normal), (vary_uniform, draw_uniform)])
def test_vary_rows_on_their_own(vary, draw):
    base = draw([1, 2, 3])
    assert vary(base, [None, None, None], draw) is base
    out = vary(base, [None, (9, 0.0), (9, 1.0)], draw)
    assert torch.equal(out[0], base[0]) and torch.equal(out[1], base[1]) and torch.equal(out[2], draw([9])[0])
    half = vary(base, [(9, 0.5), None, None], draw)
    alone = vary(base[:1], [(9, 0.5)], draw)
    assert torch.equal(half[0], alone[0]) and not torch.equal(half[0], base[0])
    with pytest.raises(ValueError):
        vary(base, [None], draw)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.floats(0.0, 1.0))
def test_vary_uniform_stays_uniform_range(seed, t):
    base = draw_uniform([seed, seed + 1])
    out = vary_uniform(base, [(seed + 7, t), (seed + 8, t)], draw_uniform)
    assert out.dtype == base.dtype and bool(((out >= 0) & (out < 1)).all())
