"""bench/shapes_images_curve.py: the fits recover a known curve, a run copied into a later file as
its reference counts once, and runs without a score or images are skipped."""
from __future__ import annotations

import json
import math

import pytest
from benchload import load_bench


def _run(images, cpu, acc):
    return {"images_seen": images, "train_stats": {"cpu_seconds_total": cpu}, "shapes_128_mean": {"overall": acc}}


def test_fits_recover_a_log_curve_and_dedup(tmp_path):
    # overall = 0.3 + 0.1 * log2(images / 1M), 5 CPU-ms per image
    runs = {f"r{i}": _run(m * 1_000_000, m * 5000.0, 0.3 + 0.1 * math.log2(m)) for i, m in enumerate((0.5, 1, 2, 4))}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"runs": runs}))
    b.write_text(json.dumps({"runs": {"ref": runs["r1"], "unscored": {"images_seen": 10}}}))
    out = tmp_path / "o.json"
    r = load_bench("shapes_images_curve").main([str(a), str(b), "--target", "0.8", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert len(r["points"]) == 4  # the copied reference and the unscored run add nothing
    assert r["log2"]["slope"] == pytest.approx(0.1)
    assert r["log2"]["images_for_target_M"] == pytest.approx(32.0)  # 0.3 + 0.1 * 5 = 0.8
    assert r["log2"]["cpu_hours_for_target"] == pytest.approx(32e6 * 0.005 / 3600)
    # a straight line through a concave curve reaches the target sooner than the log fit
    assert 0 < r["linear"]["images_for_target_M"] < r["log2"]["images_for_target_M"]


def test_one_run_is_not_a_curve(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"runs": {"only": _run(1_000_000, 5000.0, 0.3)}}))
    with pytest.raises(ValueError, match="two runs"):
        load_bench("shapes_images_curve").main([str(f)])


def test_no_scored_runs_is_a_clear_error(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"runs": {"unscored": {"images_seen": 10}}}))
    with pytest.raises(ValueError, match="two runs"):
        load_bench("shapes_images_curve").main([str(f)])
