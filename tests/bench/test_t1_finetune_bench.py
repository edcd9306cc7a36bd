"""bench/bench_t1_finetune.py on a tiny model: it trains (the weights move), measures the mean
prediction at every report, and refuses a model whose mean prediction means nothing."""
from __future__ import annotations

import pytest
from benchload import load_bench

from conftest import make_tiny


def test_t1_finetune_reports_a_curve(tmp_path):
    model = make_tiny("diffusion", tmp_path / "tiny")
    bench = load_bench("bench_t1_finetune")
    r = bench.main(["--model", str(model), "--steps", "2", "--every", "1", "--batch-size", "4", "--scenes", "8",
                    "--eval-prompts", "8", "--threads", "1", "--plain-share", "0.5", "--out", str(tmp_path / "t1.json"),
                    "--save", str(tmp_path / "ft")])
    assert [c["step"] for c in r["curve"]] == [0, 1, 2]
    assert all(c["truth_holds"] == 1.0 and c["n"] > 0 for c in r["curve"])
    spreads = [c["seed_spread"] for c in r["curve"]]
    assert spreads[0] != spreads[2]  # the fine-tune moved the network's prediction from pure noise
    import blinkgen
    saved = blinkgen.load(str(tmp_path / "ft"))  # the saved folder loads and predicts as the run ended
    assert saved.config["t1_finetune"]["steps"] == 2
    assert bench.mean_prediction(saved, bench.eval_prompts()[:8], 4)["seed_spread"] == pytest.approx(spreads[2], rel=1e-3)


def test_eval_prompts_are_the_four_versions_of_each_committed_relation_prompt():
    from blinkgen.data.shapes import RELATIONS, parse_caption

    ps = load_bench("bench_t1_finetune").eval_prompts()
    assert len(ps) % 4 == 0 and len(set(ps)) == len(ps) > 0
    assert sorted({parse_caption(p).relation for p in ps}) == sorted(RELATIONS)


def test_a_model_without_a_mean_prediction_is_refused(tmp_path):
    model = make_tiny("gan", tmp_path / "gan")
    with pytest.raises(SystemExit, match="not a plain diffusion model"):
        load_bench("bench_t1_finetune").main(["--model", str(model), "--out", str(tmp_path / "x.json")])
