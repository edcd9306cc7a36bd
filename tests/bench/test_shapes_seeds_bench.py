"""bench/bench_shapes_seeds.py end to end on a random tiny diffusion model: every attribute and every
scene kind of the 128 committed prompts is scored at each seed set, and the mean is their mean."""
from __future__ import annotations

import json

import pytest
from benchload import load_bench

from blinkgen.data.shapes import SCENE_KINDS
from conftest import make_tiny

pytestmark = pytest.mark.slow


def test_shapes_seeds_bench_scores_attributes_and_scene_kinds(tmp_path):
    model = make_tiny("diffusion", tmp_path / "tiny")
    out = tmp_path / "s.json"
    r = load_bench("bench_shapes_seeds").main(["--model", str(model), "--seeds", "0", "7", "--threads", "1",
                                               "--out", str(out)])
    assert json.loads(out.read_text()) == r
    assert sum(r["prompts_by_kind"].values()) == r["prompts"] == 128 and set(r["prompts_by_kind"]) == set(SCENE_KINDS)
    for s in ("0", "7"):
        kinds = r["by_seed_set"][s]["overall_by_kind"]
        assert set(kinds) == set(SCENE_KINDS) and all(0 <= v <= 1 for v in kinds.values())
        # overall is the prompt-weighted mean of the kinds' overall accuracies
        assert r["by_seed_set"][s]["overall"] == pytest.approx(
            sum(kinds[k] * r["prompts_by_kind"][k] for k in SCENE_KINDS) / 128)
    assert r["mean"]["overall"] == pytest.approx((r["by_seed_set"]["0"]["overall"] + r["by_seed_set"]["7"]["overall"]) / 2)
