"""bench/bench_blink.py end to end on tiny random models (a plain teacher and a shortcut model):
every rung has quality, batch throughput with MFU, and interleaved batch-1 latency with stage
shares; the peer is the diffusers loop at 28 steps with two CFG passes; the JSON renders."""
from __future__ import annotations

import json

import pytest
import torch
from benchload import load_bench

from blinkgen.eval import contrastive as C
from blinkgen.families.diffusion.folder import tiny
from blinkgen.models.clip import CLIP_PRESETS, ContrastiveModel

pytestmark = pytest.mark.slow


def test_blink_bench_on_tiny_models(tmp_path, capsys):
    torch.manual_seed(0)
    ev = C.save_evaluator(tmp_path / "evaluator", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    teacher, student = tiny(tmp_path / "teacher"), tiny(tmp_path / "student", shortcut=True)
    out = tmp_path / "blink.json"
    r = load_bench("bench_blink").main([
        "--teacher", str(teacher), "--shortcut", str(student), "--data", "shapes:200", "--nn-data", "",
        "--samples", "4", "--batch", "2", "--rounds", "2", "--threads", "1", "--cache", "deep:2",
        "--engines", "bf16", "int8", "decoder-bf16", "--matmul-n", "256", "--evaluator", str(ev), "--out", str(out)])
    names = [x["rung"] for x in r["rungs"]]
    assert names[0] == "teacher dpmpp2m@4 (reference)" and "diffusers FlowMatchEuler@28 CFG 2 passes" in names
    assert {"shortcut euler@1", "shortcut euler@4 bf16", "shortcut euler@4 int8", "teacher dpmpp2m@4 cache deep:2"} <= set(names)
    by = {x["rung"]: x for x in r["rungs"]}
    assert by["diffusers FlowMatchEuler@28 CFG 2 passes"]["network_passes_per_image"] == 56
    assert by["shortcut euler@1"]["network_passes_per_image"] == 1
    for x in r["rungs"]:
        lat = x["latency"]
        assert len(x["latency_raw_s"]) == 2 and lat["total"]["min_ms"] <= lat["total"]["p50_ms"] <= lat["total"]["max_ms"]
        assert abs(sum(lat["share_of_p50"].values()) - 1) < 0.5  # stage medians roughly make up the total
        assert x["batch2_images_per_s"] > 0 and x["mfu"] > 0 and {"fd", "alignment", "retrieval_R@1"} <= set(x["quality"])
    assert len(r["machine"]["load_average_per_round"]) == 2
    assert json.loads(out.read_text())["rungs"][0]["rung"] == names[0]
    assert "| shortcut euler@1 | 1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # never overwrites a result without --overwrite
        load_bench("bench_blink").main(["--out", str(out)])
