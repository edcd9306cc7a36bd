"""The shapes dataset: determinism, the caption grammar round trip, and the palette invariant the
checker relies on."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.data.shapes import (BACKGROUNDS, COLOURS, MAX_OBJECTS, RELATIONS, SHAPES, SIZES, Obj,
                                  Scene, describe, make_shapes, paraphrases, parse_caption, render)
from blinkgen.errors import UserInputError


def objs(max_count: int = MAX_OBJECTS):
    return st.builds(Obj, st.sampled_from(list(COLOURS)), st.sampled_from(SHAPES),
                     st.sampled_from([None, *SIZES]), st.integers(1, max_count))


@st.composite
def scenes(draw):
    """Every kind of scene the grammar expresses, with sizes and background optional."""
    bg = draw(st.sampled_from([None, *BACKGROUNDS]))
    kind = draw(st.sampled_from(["group", "two groups", "relation"]))
    if kind == "group":
        return Scene((draw(objs()),), None, bg)
    a = draw(objs(1 if kind == "relation" else MAX_OBJECTS - 1))
    b = draw(objs(1 if kind == "relation" else MAX_OBJECTS - a.count).filter(lambda o: o.key != a.key))
    return Scene((a, b), draw(st.sampled_from(RELATIONS)) if kind == "relation" else None, bg)


@given(scenes())
def test_parse_inverts_describe(scene):
    assert parse_caption(describe(scene)) == scene


@given(scenes())
@settings(max_examples=40, deadline=None)
def test_every_paraphrase_parses(scene):
    for text in paraphrases(scene):
        parse_caption(text)


def test_examples_of_the_grammar():
    assert describe(Scene((Obj("red", "circle", "large"),))) == "a large red circle"
    assert describe(Scene((Obj("orange", "square"),))) == "an orange square"
    assert describe(Scene((Obj("green", "circle", count=2),), background="black")) == \
        "two green circles on a black background"
    s = Scene((Obj("blue", "square", "small"), Obj("yellow", "triangle", "large")), "left of", "gray")
    assert describe(s) == "a small blue square left of a large yellow triangle on a gray background"
    assert parse_caption("A Small  Blue square to the left of a large yellow triangle on a grey background.") == s


@pytest.mark.parametrize("text", [
    "", "a red dog", "a crimson circle", "two red circle", "a red circles", "four red circles",
    "a red circle and a red circle", "two red circles and two blue squares",
    "a red circle left of two blue squares", "a red circle on a purple background",
    "a huge red circle", "a red circle and a blue square and a green triangle", "red circle",
])
def test_parser_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError):
        parse_caption(text)


def test_validate_rejects_inexpressible_scenes():
    with pytest.raises(ValueError):
        Scene((Obj("red", "circle", count=2), Obj("blue", "square", count=2))).validate()
    with pytest.raises(ValueError):
        Scene((Obj("red", "circle"),), relation="above").validate()


def test_make_shapes_is_a_deterministic_prefix():
    big = make_shapes(24, seed=3, size=32)
    small = make_shapes(5, seed=3, size=32)
    assert torch.equal(small.images, big.images[:5]) and small.captions == big.captions[:5]
    assert big.images.shape == (24, 3, 32, 32) and big.images.dtype == torch.uint8
    assert not torch.equal(make_shapes(5, seed=4, size=32).images, small.images)
    assert len(set(big.names)) == 24 and big.report.loaded == 24
    for caps in big.captions:
        scenes_ = [parse_caption(c) for c in caps]
        assert scenes_[0].background is not None and all(o.size for o in scenes_[0].objects)


def test_make_shapes_64_and_empty():
    assert make_shapes(3, size=64).images.shape == (3, 3, 64, 64)
    assert len(make_shapes(0)) == 0


@pytest.mark.parametrize("kwargs", [dict(n=2, size=48), dict(n=-1), dict(n=2, seed=-1), dict(n=2.5)])
def test_make_shapes_bad_arguments(kwargs):
    with pytest.raises(UserInputError):
        make_shapes(**kwargs)


def test_render_draws_background_and_only_palette_colours_inside():
    scene = Scene((Obj("red", "square", "large"),), None, "white")
    img = render(scene, 64, np.random.default_rng(0))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == BACKGROUNDS["white"]
    assert (img == COLOURS["red"]).all(-1).sum() > 0.34 ** 2 * 64 * 64 * 0.8  # a solid large square


def test_palette_blends_stay_on_their_own_line():
    """The checker explains edge pixels as background->colour blends. A blend with alpha >= 0.5
    must lie much nearer its own line than any other colour's (margin in RGB units), or blurred
    red on white would read as pink."""
    worst = np.inf
    for b in BACKGROUNDS.values():
        b = np.array(b, float)
        for (cn, c), (kn, k) in itertools.permutations(COLOURS.items(), 2):
            v = np.array(k, float) - b
            for a in np.linspace(0.5, 1.0, 11):
                q = b + a * (np.array(c, float) - b)
                t = np.clip((q - b) @ v / (v @ v), 0, 1)
                worst = min(worst, np.linalg.norm(q - b - t * v))
    assert worst > 30
    names = list(COLOURS) + list(BACKGROUNDS)
    assert len(set(names)) == len(names) and len(COLOURS) >= 6


def test_scene_kind_of_each_grammar_form_and_the_sampler_mix():
    from blinkgen.data.shapes import SCENE_KINDS, sample_scene, scene_kind

    assert [scene_kind(parse_caption(t)) for t in (
        "a large red circle on a white background", "three small blue squares on a gray background",
        "two red circles and a green square on a black background",
        "a small red circle left of a large blue square on a white background")] == list(SCENE_KINDS)
    kinds = [scene_kind(sample_scene(np.random.default_rng([0, i]))) for i in range(4000)]
    share = {k: kinds.count(k) / len(kinds) for k in SCENE_KINDS}
    for k, want in zip(SCENE_KINDS, (0.40, 0.20, 0.15, 0.25)):  # sample_scene's documented mix
        assert abs(share[k] - want) < 0.03, (k, share[k])


def test_shapes_of_chosen_kinds_are_reproducible_and_only_those_kinds():
    from blinkgen.data.registry import load_dataset
    from blinkgen.data.shapes import scene_kind

    d = load_dataset("shapes:40:relation,two-groups", 32, 3)
    assert {scene_kind(parse_caption(c[0])) for c in d.captions} == {"relation", "two-groups"}
    again = make_shapes(20, seed=3, size=32, kinds=("relation", "two-groups"))  # a prefix, as the full mix
    assert torch.equal(again.images, d.images[:20]) and again.names == d.names[:20]
    assert d.names[0] == "shapes-3-relation_two-groups-000000"
    full = make_shapes(40, seed=3, size=32)  # the unfiltered set is unchanged by the option
    rel = [i for i, c in enumerate(full.captions) if scene_kind(parse_caption(c[0])) == "relation"]
    only = make_shapes(40, seed=3, size=32, kinds=("relation",))
    i = rel[0]  # a sample whose first draw is a relation is the same image either way
    assert torch.equal(only.images[i], full.images[i])


@pytest.mark.parametrize("spec, msg", [("shapes:10:triangles", "scene kinds must be among"),
                                       ("shapes::relation", "write shapes:N"), ("shapes:10:", "write shapes:N")])
def test_shapes_kind_specs_refuse_unknown_kinds_in_one_line(spec, msg):
    from blinkgen.data.registry import load_dataset

    with pytest.raises(UserInputError, match=msg):
        load_dataset(spec, 32, 0)


def test_a_kinds_part_can_be_oversampled_with_the_group_mix():
    """The README's recipe: 'shapes:N+shapes:M:relation,two-groups' with --order group --mix 0.5,0.5
    spends half of every epoch's draws on the relation and two-group scenes."""
    from blinkgen.data.registry import load_dataset
    from blinkgen.train.order import make_order

    d = load_dataset("shapes:120+shapes:40:relation,two-groups", 32, 0)
    order = make_order("group", d.group_ids(), 0, d.part_list(), "0.5,0.5")
    idx = torch.cat([order.indices(s, 64) for s in range(40)])
    share = torch.tensor(d.part_list())[idx].float().mean().item()
    assert abs(share - 0.5) < 0.05  # the kinds part is a quarter of the images, half of the draws
