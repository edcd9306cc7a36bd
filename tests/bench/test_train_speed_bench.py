"""bench/bench_train_speed.py end to end on tiny networks: every setting of a denoiser and of the AR
family's Llama trains (finite images/s), the math-backend setting included, and the JSON records the
command that made it."""
from __future__ import annotations

import json
import math

from benchload import load_bench


def test_train_speed_bench_times_every_setting_of_a_denoiser_and_a_llama(tmp_path):
    out = tmp_path / "speed.json"
    r = load_bench("bench_train_speed").main(["--presets", "uvit-tiny,llama-tiny", "--batch", "2", "--threads", "1",
                                              "--steps", "1", "--rounds", "1",
                                              "--settings", "fp32+foreach,bf16+fused+sdpa-math", "--out", str(out)])
    rows = {(x["preset"], x["setting"]): x["images_per_s_median"] for x in r["rows"]}
    assert set(rows) == {(p, s) for p in ("uvit-tiny", "llama-tiny") for s in ("fp32+foreach", "bf16+fused+sdpa-math")}
    assert all(math.isfinite(v) and v > 0 for v in rows.values())
    assert json.loads(out.read_text())["command"].startswith("python bench/bench_train_speed.py --presets uvit-tiny,llama-tiny")


def test_sdpa_numerics_bench_puts_math_at_fp32_rounding_from_the_default_kernel(tmp_path):
    r = load_bench("bench_sdpa_numerics").main(["--preset", "uvit-tiny", "--batch", "4", "--threads", "1",
                                                "--out", str(tmp_path / "n.json")])
    err = {x["setting"]: x["grad_rel_err_vs_fp32_default"] for x in r["rows"]}
    assert err["fp32+default"] == 0 and err["fp32+math"] < 1e-4  # the same step, another summation order
    assert 0 < err["bf16+math"] < 0.1 and 0 < err["bf16+default"] < 0.1
