"""bench/bench_shapes_ceiling.py end to end on the shipped autoencoder: the checker passes every
true render of the 128 committed prompts, and the round trip keeps nearly all of them (0.977-0.984
per seed set when measured; a broken encode/decode or checker drops far below)."""
from __future__ import annotations

import json

import pytest
from benchload import load_bench

from blinkgen.data.shapes import SCENE_KINDS

pytestmark = pytest.mark.slow


def test_shapes_ceiling_bench_scores_renders_and_round_trips(tmp_path):
    out = tmp_path / "c.json"
    r = load_bench("bench_shapes_ceiling").main(["--seeds", "0", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == r
    assert r["renders_mean"]["overall"] == 1.0
    assert set(r["round_trip_mean"]["overall_by_kind"]) == set(SCENE_KINDS)
    assert 0.95 <= r["round_trip_mean"]["overall"] <= 1.0
