"""Parts of bench_ar.py: the small trained AR model the quality and speculative rows run on, and
speculative Jacobi decoding (SJD) against plain cached decoding at batch 1 (CPU time, sampling and
greedy; greedy SJD must reproduce plain decoding token for token)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from blinkgen.families.ar.pipeline import ARPipeline
from blinkgen.sampling.ar import DecodeSettings, decode, draw_uniforms
from blinkgen.sampling.speculative import speculative_decode_batch
from blinkgen.speed.fused_llama import fused_view


def quick_model(run: Path, steps_tok: int, steps_ar: int) -> Path:
    """A small trained AR model on the shapes set, through the shared training loop."""
    from blinkgen.train.config import TrainConfig
    from blinkgen.train.loop import train

    model = run / "ar" / "model"
    if (model / "config.json").is_file():
        return model
    common = dict(data="shapes:3000", size=64, batch_size=32, sample_every=0, ckpt_every=0, log_every=50,
                  eval_every=0, warmup=50)
    tok = run / "tok" / "model"
    if not (tok / "config.json").is_file():
        tok = train(TrainConfig(family="tokenizer", out=str(run / "tok"), preset="tiny", steps=steps_tok,
                                lr=2e-3, **common))
    return train(TrainConfig(family="ar", out=str(run / "ar"), preset="XXS", steps=steps_ar, lr=2e-3,
                             autoencoder=str(tok), **common))


def speculative(gen: ARPipeline, windows: list[int], guidance: float, prompts: list[str]) -> dict:
    """Batch 1, one prompt at a time: plain cached decode vs SJD, sampling and greedy (CPU time)."""
    m = gen.model
    N = m.cfg.n_tokens
    out = {}
    for mode, temp in (("sampling", 1.0), ("greedy", 0.0)):
        s = DecodeSettings(temperature=temp, guidance=guidance)
        plain_t, rows = [], {w: {"t": [], "tpp": [], "calls": [], "same": []} for w in windows}
        for i, prompt in enumerate(prompts):
            pre, pm = m.conditioning(gen.encode_prompts([prompt]), s.cfg)
            t = time.process_time()
            plain = decode(fused_view(m.llama), pre, pm, draw_uniforms([torch.Generator().manual_seed(i)], N), s)
            plain_t.append(time.process_time() - t)
            for w in windows:
                t = time.process_time()
                toks, st = speculative_decode_batch(fused_view(m.llama), pre, pm, N,
                                                    [torch.Generator().manual_seed(i)], s, w)
                r = rows[w]
                r["t"].append(time.process_time() - t)
                r["tpp"].append(st[0].tokens_per_pass)
                r["calls"].append(1 + st[0].passes)
                r["same"].append(bool(torch.equal(toks, plain)))
        tp = statistics.mean(plain_t)
        out[mode] = {"plain_cached": {"seconds_cpu": round(tp, 4), "tokens_per_s_cpu": round(N / tp, 1),
                                      "network_calls": N}}
        for w, r in rows.items():
            ts = statistics.mean(r["t"])
            out[mode][f"sjd_window_{w}"] = {
                "seconds_cpu": round(ts, 4), "tokens_per_s_cpu": round(N / ts, 1),
                "accepted_tokens_per_pass": round(statistics.mean(r["tpp"]), 3),
                "network_calls": round(statistics.mean(r["calls"]), 1),
                "speedup_vs_plain": round(tp / ts, 2),
                **({"identical_to_greedy": all(r["same"])} if temp == 0 else {})}
    return out
