"""bench/bench_relation.py on a tiny random model: four versions per relation scene, the
sensitivity is a finite non-negative ratio, and the checker scored every image."""
from __future__ import annotations

import json

from benchload import load_bench

from conftest import make_tiny


def test_relation_bench_on_a_tiny_model(tmp_path):
    model = make_tiny("diffusion", tmp_path / "tiny")
    out = tmp_path / "rel.json"
    r = load_bench("bench_relation").main(["--model", str(model), "--scenes", "2", "--seeds", "2", "--steps", "2",
                                           "--out", str(out), "--grid", str(tmp_path / "g.png")])
    assert r["scenes"] == 2 and r["n"] == 2 * 4 * 2  # scenes x versions x seeds
    assert all(0 <= x < 10 for x in r["sensitivity_by_scene"]) and 0 <= r["relation"] <= 1
    assert json.loads(out.read_text())["sensitivity_mean"] == r["sensitivity_mean"]
    # placement and its opposite-relation control are over the same images (two-colour scenes)
    assert r["n_placement"] <= r["n"]
    if r["n_placement"]:
        assert 0 <= r["placement"] <= 1 and 0 <= r["placement_opposite_relation"] <= 1
    assert (tmp_path / "g.png").is_file()
