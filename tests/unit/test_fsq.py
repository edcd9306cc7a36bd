"""FSQ invariants and tokenizer shapes (tiny sizes, CPU, a few seconds)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.models.fsq import FSQ
from blinkgen.models.tokenizer import TOKENIZER_PRESETS, FSQTokenizer, TokenizerConfig

torch.set_num_threads(1)

levels_st = st.lists(st.integers(2, 9), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(levels=levels_st, seed=st.integers(0, 2**31 - 1))
def test_indices_codes_indices_roundtrip(levels, seed):
    fsq = FSQ(levels)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(fsq.codebook_size, (3, 17), generator=g)
    codes = fsq.indices_to_codes(idx)  # (3, 17, d)
    assert codes.shape == (3, 17, len(levels))
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(fsq.codes_to_indices(codes), idx)


@settings(max_examples=60, deadline=None)
@given(levels=levels_st, seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 20.0))
def test_quantized_codes_roundtrip_through_indices(levels, seed, scale):
    fsq = FSQ(levels)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(64, len(levels), generator=g) * scale
    codes, idx = fsq(z)
    assert idx.min() >= 0 and idx.max() < fsq.codebook_size
    assert torch.allclose(fsq.indices_to_codes(idx), codes, atol=1e-6)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 5, 5, 5, 5], [2, 3]])
def test_every_level_is_reachable(levels):
    fsq = FSQ(levels)
    z = torch.linspace(-8, 8, 4001)[:, None].expand(-1, len(levels))
    digits = fsq.codes_to_digits(fsq.quantize(z))  # (4001, d)
    for i, L in enumerate(levels):
        assert sorted(digits[:, i].unique().tolist()) == list(range(L))
    # codebook size is the full grid
    assert fsq.codebook_size == math.prod(levels)


def test_straight_through_gradient_is_the_bound_gradient():
    fsq = FSQ([8, 5, 5])
    z = torch.randn(10, 3, requires_grad=True)
    w = torch.randn(10, 3)
    (fsq.quantize(z) * w).sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    (fsq.bound(z2) / fsq._half_width * w).sum().backward()
    assert z.grad.abs().min() > 0  # rounding did not kill the gradient
    assert torch.allclose(z.grad, z2.grad)


def test_wrong_last_dim_fails_loudly():
    with pytest.raises(ValueError, match="last dim"):
        FSQ([8, 5]).quantize(torch.zeros(4, 3))


@pytest.mark.parametrize("channels,grid", [([8, 16, 16, 16], 8), ([8, 16, 16], 16)])
def test_tokenizer_shapes_and_gradients(channels, grid):
    cfg = TokenizerConfig(channels=channels, levels=[5, 5])
    tok = FSQTokenizer(cfg)
    assert cfg.grid == grid and tok.n_tokens == grid * grid and tok.codebook_size == 25
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    idx = tok.encode_uint8(images)
    assert idx.shape == (2, grid * grid) and idx.dtype == torch.long
    assert 0 <= idx.min() and idx.max() < 25
    out = tok.decode(idx)
    assert out.shape == (2, 3, 64, 64)
    # decode(encode(x)) is what forward computes, so training sees what sampling decodes
    x = images.float() / 127.5 - 1
    assert torch.allclose(tok.reconstruct(x), out, atol=1e-5)
    loss, logs = tok(x)  # forward is the loss (for DDP)
    loss.backward()
    assert tok.encoder[0].weight.grad.abs().sum() > 0  # reached the encoder through the round
    assert set(logs) == {"l1", "mse"}


def test_tokenizer_presets_are_64_and_256_tokens():
    assert TOKENIZER_PRESETS["S"].n_tokens == 64 and TOKENIZER_PRESETS["S"].codebook_size == 1000
    assert TOKENIZER_PRESETS["S-f4"].n_tokens == 256
    assert TOKENIZER_PRESETS["XS"].n_tokens == 64 and TOKENIZER_PRESETS["XS"].codebook_size == 1000
    with pytest.raises(ValueError):
        FSQTokenizer(TokenizerConfig(channels=[4, 4])).encode(torch.zeros(1, 3, 32, 32))
