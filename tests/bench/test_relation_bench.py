"""bench/bench_relation.py on a tiny random model: four versions per relation scene, the
sensitivity is a finite non-negative ratio, and the checker scored every image."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from benchload import load_bench

from conftest import make_tiny


def test_relation_bench_on_a_tiny_model(tmp_path):
    model = make_tiny("diffusion", tmp_path / "tiny")
    out = tmp_path / "rel.json"
    r = load_bench("bench_relation").main(["--model", str(model), "--scenes", "2", "--seeds", "2", "--steps", "2",
                                           "--out", str(out), "--grid", str(tmp_path / "g.png"),
                                           "--mean-grid", str(tmp_path / "m.png")])
    assert r["scenes"] == 2 and r["n"] == 2 * 4 * 2  # scenes x versions x seeds
    assert all(0 <= x < 10 for x in r["sensitivity_by_scene"]) and 0 <= r["relation"] <= 1
    assert json.loads(out.read_text())["sensitivity_mean"] == r["sensitivity_mean"]
    # placement and its opposite-relation control are over the same images (two-colour scenes)
    assert r["n_placement"] <= r["n"]
    if r["n_placement"]:
        assert 0 <= r["placement"] <= 1 and 0 <= r["placement_opposite_relation"] <= 1
    assert (tmp_path / "g.png").is_file()
    from PIL import Image
    with Image.open(tmp_path / "m.png") as m:  # 4 versions x (mean prediction, true mean, seed 0)
        assert m.size[0] > m.size[1] * 0.5 and m.size[1] > m.size[0]
    mp = r["mean_prediction"]  # the tiny model is a plain (not distilled) diffusion model: measured
    assert 0 <= mp["n"] <= 2 * 4 and mp["truth_holds"] == 1.0 and mp["truth_offset_px"] > 5
    assert mp["n"] == 0 or mp["seed_spread"] > 0  # a 2-step model has not learnt to ignore the noise at t = 1


@pytest.mark.parametrize("relation", ["left of", "right of", "above", "below"])
def test_mean_offset_reads_the_relation_of_a_mean_image(relation):
    """On the mean of true renders the offset is large and positive; judged against the opposite
    relation it is the same number negated; a mirrored image flips left/right only."""
    from blinkgen.data.shapes import OPPOSITE, parse_caption, render
    bench = load_bench("bench_relation")
    scene = parse_caption(f"a red circle {relation} a blue square on a white background")
    mean = np.mean([render(scene, 64, np.random.default_rng(i)) for i in range(32)], 0)
    d = bench.mean_offset(mean, scene)
    assert d > 15
    assert bench.mean_offset(mean, replace(scene, relation=OPPOSITE[relation])) == pytest.approx(-d)
    mirrored = bench.mean_offset(mean[:, ::-1], scene)
    assert mirrored == pytest.approx(-d if relation in ("left of", "right of") else d, abs=1e-6)
    blank = np.full((64, 64, 3), 255.0)
    assert bench.mean_offset(blank, scene) == 0  # nothing of either colour: no offset


def test_mean_prediction_applies_to_plain_diffusion_models_only(tmp_path):
    """Other families have prompts too (a GAN encodes them) but no prediction from pure noise."""
    import blinkgen

    bench = load_bench("bench_relation")
    assert bench.applies(blinkgen.load(str(make_tiny("diffusion", tmp_path / "d"))))
    for family in ("gan", "vae"):
        pipe = blinkgen.load(str(make_tiny(family, tmp_path / family)))
        assert not bench.applies(pipe) and bench.mean_prediction(pipe, ["a red circle left of a blue square"], 2) is None
