"""bench/bench_tokenizer.py end to end on a random tiny tokenizer and autoencoder: every number the
issue asks of a tokenizer is there, finite and in range, and the JSON renders."""
from __future__ import annotations

import math

import torch
from benchload import load_bench

from blinkgen.eval import contrastive as C
from blinkgen.models.clip import CLIP_PRESETS, ContrastiveModel
from conftest import make_tiny


def test_tokenizer_bench_on_tiny_models(tmp_path, capsys):
    torch.manual_seed(0)
    ev = C.save_evaluator(tmp_path / "evaluator", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    ar = make_tiny("ar", tmp_path / "ar")
    diff = make_tiny("diffusion", tmp_path / "diff")
    r = load_bench("bench_tokenizer").main(["--tokenizer", str(ar), "--autoencoder", str(diff), "--data", "shapes:200",
                       "--evaluator", str(ev), "--threads", "1", "--out", str(tmp_path / "tok.json")])
    fsq, ae = r["rows"]
    assert fsq["kind"] == "fsq" and fsq["tokens_per_image"] == 16 and fsq["codebook_size"] == 125
    assert 0 < fsq["codebook_usage"] <= 1 and 1 <= fsq["code_perplexity"] <= 125
    for x in (fsq, ae):
        assert math.isfinite(x["psnr_db"]) and x["fd_recon_vs_real"] >= 0 and -1 <= x["alignment_recon"] <= 1
    assert r["n_images"] > 0 and r["real_fd_between_halves"] > 0
    assert "| codebook usage |" in capsys.readouterr().out
