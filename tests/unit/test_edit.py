"""Editing helpers (sampling/edit.py): the cut schedule, the known-region wrapper on every flow
solver, masks between pixel and latent/token grids, the pixel composite, and the mask convention."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st
from PIL import Image

from blinkgen.errors import UserInputError
from blinkgen.data.image_io import read_mask
from blinkgen.errors import ImageReadError
from blinkgen.sampling.edit import (MERGE_FRACTION, composite, cut_schedule, default_strength, edit_pixels,
                                    init_pixels, inpaint_wrap, latent_mask, start_point, token_mask)


def mask_array(im) -> np.ndarray:
    return np.asarray(read_mask(im), dtype=np.float32) / 255.0
from blinkgen.sampling.flow import SAMPLERS, STOCHASTIC, flow_schedule, interpolate


@settings(max_examples=200, deadline=None)
@given(steps=st.integers(1, 60), shift=st.floats(1.0, 4.0), t=st.floats(1e-3, 1.0))
@example(steps=3, shift=3.0, t=0.875)  # one merge left a second sliver (0.875 -> 0.6 before a 0.6 step)
def test_cut_schedule_starts_at_t_and_keeps_the_grid_below(steps, shift, t):
    ts = flow_schedule(steps, shift)
    cut = cut_schedule(ts, t)
    assert abs(float(cut[0]) - min(t, 1.0)) < 1e-6 and float(cut[-1]) == 0.0
    assert bool((cut[1:] < cut[:-1]).all())  # strictly decreasing
    grid = set(ts.tolist())
    assert all(v in grid for v in cut[1:].tolist())  # nothing invented below the cut
    if t >= float(ts[0]):
        assert torch.equal(cut, ts)
    elif len(cut) >= 3:  # no sliver of a first step before the next one
        assert float(cut[0] - cut[1]) >= MERGE_FRACTION * float(cut[1] - cut[2]) - 1e-6
    assert len(cut) - 1 <= steps


def test_cut_schedule_refuses_t_outside_the_path():
    for t in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            cut_schedule(flow_schedule(4), t)


def test_start_point_is_the_path_and_t1_is_the_noise_itself():
    z, n = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.equal(start_point(z, n, 1.0), n)
    assert torch.allclose(start_point(z, n, 0.3), interpolate(z, n, torch.full((2,), 0.3)))


def analytic_velocity(x, t):
    """Gaussian data N(0, 0.25): the exact rectified-flow velocity (see test_flow_samplers)."""
    t = t.double().view(-1, *[1] * (x.dim() - 1))
    var = (1 - t) ** 2 * 0.25 + t**2
    return ((x.double() - (1 - t) * 0.25 / var * x.double()) / t).float()


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("t_start", [1.0, 0.55])
def test_known_region_stays_on_the_inputs_path_for_every_solver(sampler, t_start):
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    repaint = torch.zeros(3, 1, 8, 8)
    repaint[:, :, 2:6, 2:6] = 1.0
    fn = inpaint_wrap(analytic_velocity, z, repaint)
    extra = {"noise": torch.randn((10, *z.shape), generator=g)} if sampler in STOCHASTIC else {}
    out = SAMPLERS[sampler](fn, start_point(z, noise, t_start), cut_schedule(flow_schedule(10), t_start), **extra)
    keep = repaint.expand_as(z) == 0
    assert (out - z)[keep].abs().max() < 1e-4  # the known latents come back
    free = SAMPLERS[sampler](analytic_velocity, start_point(z, noise, t_start), cut_schedule(flow_schedule(10), t_start),
                             **extra)
    inside = repaint.expand_as(z) == 1
    assert (out - z)[inside].abs().mean() > 0.1 and (free - z)[keep].abs().mean() > 0.1  # the wrapper did it


def test_all_ones_mask_leaves_the_model_function_exactly():
    z, x, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.full((2,), 0.4)
    fn = inpaint_wrap(analytic_velocity, z, torch.ones(2, 1, 8, 8))
    assert torch.equal(fn(x, t), analytic_velocity(x, t))


def test_latent_mask_covers_the_hole_and_feathers_one_cell_out():
    px = torch.zeros(1, 1, 32, 32)
    px[..., 8:24, 8:24] = 1.0  # cells 2..5 of an 8x8 grid at factor 4
    m = latent_mask(px, 4)[0, 0]
    assert m.shape == (8, 8)
    assert bool((m[2:6, 2:6] == 1).all()) and float(m[0, 0]) == 0.0 and float(m[0, 7]) == 0.0
    assert 0 < float(m[1, 3]) < 1 and 0 < float(m[1, 1]) < float(m[1, 3])  # soft ring, corners softer
    px2 = torch.zeros(1, 1, 32, 32)
    px2[..., 0, 0] = 1.0  # one pixel of sixteen: partly repainted
    assert 0 < float(latent_mask(px2, 4)[0, 0, 0, 0]) < 1


def test_token_mask_marks_every_touched_cell():
    px = torch.zeros(2, 1, 16, 16)
    px[0, :, 5, 5] = 1.0
    tm = token_mask(px, 4)
    assert tm.shape == (2, 16) and tm[0].sum() == 1 and bool(tm[0, 5]) and tm[1].sum() == 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), soft=st.booleans())
def test_composite_keeps_every_unmasked_pixel_exactly(seed, soft):
    rng = np.random.default_rng(seed)
    gen = torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    init = torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    m = torch.from_numpy((rng.random((2, 1, 16, 16)) < 0.4).astype(np.float32))
    if soft:
        m = m * torch.from_numpy(rng.random((2, 1, 16, 16)).astype(np.float32))
    out = composite(gen, init, m)
    keep = (m == 0).expand_as(init)
    assert out.dtype == torch.uint8 and torch.equal(out[keep], init[keep])
    full = torch.ones(1, 1, 16, 16)
    assert torch.equal(composite(gen[:1], init[:1], full), gen[:1])  # an all-repaint mask: all generated


def test_mask_convention_alpha_first_then_white_is_repaint():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 255))  # opaque black: keep
    rgba.putpixel((1, 1), (0, 0, 0, 0))  # transparent: repaint (OpenAI)
    rgba.putpixel((2, 2), (255, 255, 255, 255))  # opaque white: alpha decides, keep
    a = mask_array(rgba)
    assert a[1, 1] == 1.0 and a[2, 2] == 0.0 and a[0, 0] == 0.0
    opaque = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    opaque.putpixel((3, 3), (255, 255, 255, 255))  # fully opaque: no transparency, so white = repaint
    assert mask_array(opaque)[3, 3] == 1.0 and mask_array(opaque)[0, 0] == 0.0
    grey = Image.new("L", (8, 8), 0)
    grey.putpixel((4, 4), 255)
    assert mask_array(grey)[4, 4] == 1.0 and mask_array(grey).sum() == 1.0
    pal = Image.new("P", (8, 8), 0)
    pal.info["transparency"] = 0  # palette transparency: every pixel transparent
    assert mask_array(pal).min() == 1.0


def test_init_and_mask_sizes_are_checked_and_resampled(tmp_path):
    im = Image.new("RGB", (40, 40), (10, 20, 30))
    px = init_pixels(im, 32)
    assert px.shape == (3, 32, 32) and px.dtype == torch.uint8 and int(px[0, 5, 5]) == 10
    with pytest.raises(UserInputError, match="init_image must be square"):
        init_pixels(Image.new("RGB", (40, 30)), 32)
    px2, m = edit_pixels(im, Image.new("L", (40, 40), 255), 32)
    assert torch.equal(px, px2) and m.shape == (1, 32, 32) and float(m.min()) == 1.0
    assert edit_pixels(im, None, 32)[1] is None
    with pytest.raises(UserInputError, match="mask is 20x20 but init_image is 40x40"):
        edit_pixels(im, Image.new("L", (20, 20)), 32)


def test_requests_images_go_through_the_one_reader(tmp_path):
    """Paths, bytes and arrays work like PIL images (data/image_io.py); a file that is not an
    image is one clear ImageReadError naming the field."""
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA")
    path = tmp_path / "a.png"
    im.save(path)
    ref = init_pixels(im, 16)
    assert torch.equal(init_pixels(path, 16), ref) and torch.equal(init_pixels(path.read_bytes(), 16), ref)
    assert torch.equal(init_pixels(np.asarray(im), 16), ref)  # RGBA composited on white, as read_image does
    _, m = edit_pixels(path, path, 16)  # its own alpha as an OpenAI mask
    assert torch.allclose(m[0], 1 - torch.from_numpy(np.asarray(im)[..., 3] / 255.0).float(), atol=1e-6)
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="init_image"):
        init_pixels(tmp_path / "x.png", 16)
    with pytest.raises(ImageReadError, match="mask"):
        edit_pixels(path, tmp_path / "x.png", 16)


def test_default_strength():
    assert default_strength(None, True) == 1.0 and default_strength(None, False) == 0.6
    assert default_strength(0.3, True) == 0.3
