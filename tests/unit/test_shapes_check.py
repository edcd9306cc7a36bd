"""The shapes checker: (near) perfect on true renders, blind guesses on shuffled captions, robust to
the blur and noise of generated images, and each attribute fails on its own."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from PIL import Image
from scipy import ndimage

from blinkgen.data.shapes import Obj, Scene, describe, make_shapes, render
from blinkgen.errors import UserInputError
from blinkgen.eval.shapes_check import check, check_placement, score
from test_shapes import scenes

N = 200


@pytest.fixture(scope="module", params=[64, 32])
def data(request):
    return make_shapes(N, seed=11, size=request.param)


def degrade(images: torch.Tensor, seed: int = 0) -> np.ndarray:
    """Mild Gaussian blur (sigma 1 px at 64, 0.5 px at 32) plus noise (std 10 of 255)."""
    x = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    sigma = images.shape[-1] / 64
    x = ndimage.gaussian_filter(x, (0, sigma, sigma, 0))
    x += np.random.default_rng(seed).normal(0, 10, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def test_true_renders_pass(data):
    r = score(data.images, [c[0] for c in data.captions])
    assert r["overall"] >= 0.99, r
    assert r["n_relation"] > 20 and r["n_background"] == N  # the set exercises relations


def test_every_paraphrase_of_a_render_passes(data):
    caps = [c[-1] for c in data.captions[:60]]  # without background, or the mirrored relation
    assert score(data.images[:60], caps)["overall"] >= 0.99


def test_shuffled_captions_fail(data):
    perm = np.random.default_rng(0).permutation(N)
    r = score(data.images, [data.captions[p][0] for p in perm])
    assert r["overall"] <= 0.03, r


def test_blurred_noisy_renders_mostly_pass(data):
    r = score(degrade(data.images), [c[0] for c in data.captions])
    assert r["overall"] >= 0.9, r


@given(scenes())
@settings(max_examples=25, deadline=None)
def test_render_then_check_for_any_scene(scene):
    """Partially specified scenes too: what the caption leaves open is drawn at random."""
    img = render(scene, 64, np.random.default_rng(0))
    assert check(img, describe(scene)).overall


def _one(caption: str, size: int = 64) -> np.ndarray:
    from blinkgen.data.shapes import parse_caption
    return render(parse_caption(caption), size, np.random.default_rng(1))


def test_each_attribute_fails_on_its_own():
    img = _one("a large red circle on a white background")
    r = check(img, "a small red circle")
    assert (r.colour, r.shape, r.count, r.size, r.overall) == (True, True, True, False, False)
    r = check(img, "a large blue circle")
    assert (r.colour, r.shape, r.count, r.size, r.overall) == (False, True, False, False, False)
    r = check(img, "a large red square")
    assert (r.colour, r.shape, r.overall) == (True, False, False)
    r = check(img, "two large red circles")
    assert (r.colour, r.shape, r.count, r.size, r.overall) == (True, True, False, True, False)
    r = check(img, "a large red circle on a black background")
    assert (r.background, r.overall, r.relation) == (False, False, None)


def test_relation_is_read_from_positions():
    img = _one("a small blue square left of a large yellow triangle on a gray background")
    assert check(img, "a large yellow triangle right of a small blue square").overall
    r = check(img, "a small blue square right of a large yellow triangle")
    assert (r.colour, r.shape, r.count, r.size, r.relation, r.overall) == (True, True, True, True, False, False)
    assert not check(img, "a small blue square above a large yellow triangle").relation


def test_placement_reads_positions_by_colour_alone():
    img = _one("a small blue square left of a large yellow triangle on a gray background")
    assert check_placement(img, "a small blue square left of a large yellow triangle")
    assert check_placement(img, "a large blue circle left of a small yellow square")  # shapes, sizes ignored
    assert check_placement(img, "a large yellow circle right of a small blue circle")
    assert check_placement(img, "a small blue square right of a large yellow triangle") is False
    assert check_placement(img, "a small blue square above a large yellow triangle") is False
    assert check_placement(img, "a small blue square left of a large blue triangle") is None  # one colour
    assert check_placement(img, "a small blue square and a large yellow triangle") is None
    with pytest.raises(UserInputError):
        check_placement(img, "a photo of a cat")


def test_accepts_pil_torch_and_float_images():
    img = _one("two small green squares on a black background", size=32)
    caption = "two small green squares"
    assert check(Image.fromarray(img), caption).overall
    assert check(torch.from_numpy(img).permute(2, 0, 1), caption).overall
    assert check(img.astype(np.float32) / 255, caption).overall


def test_bad_input_is_a_user_error():
    img = _one("a red circle")
    with pytest.raises(UserInputError):
        check(img, "a photo of a cat")
    with pytest.raises(UserInputError):
        score([img], ["a red circle", "a blue square"])
    with pytest.raises(UserInputError):
        check(np.zeros((8, 8)), "a red circle")


def test_blank_image_has_no_objects():
    r = check(np.full((64, 64, 3), 128, np.uint8), "a red circle on a gray background")
    assert r.objects == [] and r.background and not r.count and not r.overall
