"""Training throughput of the diffusion denoisers on this machine: fp32 against bf16 autocast, with AdamW's
for-each and fused kernels, at the training batch size. Not a test.

    python bench/bench_train_speed.py --presets S,M --batch 64 --threads 2 \
        --out bench/results/train_speed.json

A preset "llama-<size>" (llama-XS, llama-S, ...) times the AR family's Llama instead: one causal
next-token step (cross-entropy over 1,024 codes) on random sequences of 288 tokens.

Each setting runs one flow-matching training step (forward, backward, clip, AdamW, EMA) on random
latents and random MiniLM-shaped text states (32 positions, the first 18 real, as a shapes or
emoji caption's padded encoding: a joint-text-mode U-ViT trains on the real ones), exactly as `DiffusionTask.loss` + the loop do, so
the number is the loop's images/s without data loading (the data are in memory in the loop too).
Settings are interleaved round by round, so a change in machine load hits them all alike; the
median over rounds is reported with the range.
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blinkgen.models.denoisers import from_preset
from blinkgen.models.llama import Llama, llama_config
from blinkgen.outputs import parse_args_with_out, write_text
from blinkgen.train.config import sdpa_context
from blinkgen.train.ema import EMA

SETTINGS = {  # name -> (autocast dtype or None, fused AdamW, SDPA's math backend instead of its default)
    "fp32+foreach": (None, False, False),
    "fp32+fused": (None, True, False),
    "bf16+foreach": (torch.bfloat16, False, False),
    "bf16+fused": (torch.bfloat16, True, False),
    # the CPU's flash-attention backward costs ~21 ms a call at 16-32 tokens (torch.profiler):
    "bf16+fused+sdpa-math": (torch.bfloat16, True, True),
}


LLAMA_T, LLAMA_VOCAB = 288, 1024  # "llama-<size>": 32 text + 256 image positions, an FSQ codebook's size


def make(preset: str, fused: bool):
    torch.manual_seed(0)
    if preset.startswith("llama-"):  # the AR family's network: causal next-token steps on random tokens
        dit = Llama(llama_config(preset.removeprefix("llama-"), vocab_size=LLAMA_VOCAB, max_seq_len=LLAMA_T))
    else:
        dit = from_preset(preset, 4, 16)
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4, betas=(0.9, 0.99), fused=fused, foreach=None if fused else True)
    return dit, opt, EMA(dit, 0.999)


def step(dit, opt, ema, amp, B, k, math=False):
    with sdpa_context("math" if math else "default"):  # the training loop's own wrapper
        _step(dit, opt, ema, amp, B, k)


def _step(dit, opt, ema, amp, B, k):
    g = torch.Generator().manual_seed(k)
    if isinstance(dit, Llama):
        ids = torch.randint(0, LLAMA_VOCAB, (B, LLAMA_T + 1), generator=g)
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits = dit(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, LLAMA_VOCAB), ids[:, 1:].reshape(-1))
        return _update(dit, opt, ema, loss, k)
    x0 = torch.randn(B, 4, 16, 16, generator=g)
    noise = torch.randn(B, 4, 16, 16, generator=g)
    t = torch.rand(B, generator=g)
    ctx, mask, pooled = torch.randn(B, 32, 384, generator=g), torch.arange(32).expand(B, 32) < 18, torch.randn(B, 384, generator=g)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        v = dit(xt, t, ctx, mask, pooled)
    loss = F.mse_loss(v.float(), noise - x0)
    _update(dit, opt, ema, loss, k)


def _update(dit, opt, ema, loss, k):
    loss.backward()
    torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    ema.update(dit, k)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="S,M")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting per round")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="subset of " + ",".join(SETTINGS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = parse_args_with_out(ap, argv)  # an existing --out: refused now, exit 2
    torch.set_num_threads(a.threads)
    chosen = {k: SETTINGS[k] for k in a.settings.split(",")}
    rows = []
    for preset in a.presets.split(","):
        states = {name: make(preset, fused) for name, (_, fused, _) in chosen.items()}
        for name, (amp, _, math) in chosen.items():  # warm-up: allocation, oneDNN primitive caches
            for k in range(2):
                step(*states[name], amp, a.batch, k, math)
        times = {name: [] for name in chosen}
        for r in range(a.rounds):
            for name, (amp, _, math) in chosen.items():
                t = time.perf_counter()
                for k in range(a.steps):
                    step(*states[name], amp, a.batch, 100 + k, math)
                times[name].append(a.batch * a.steps / (time.perf_counter() - t))
        for name, ips in times.items():
            row = {"preset": preset, "setting": name, "images_per_s_median": statistics.median(ips),
                   "images_per_s_min": min(ips), "images_per_s_max": max(ips), "rounds": ips}
            rows.append(row)
            print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items() if k != "rounds"}), flush=True)
    out = {"batch": a.batch, "threads": a.threads, "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": platform.processor() or platform.machine(),
           "load_avg_1m_at_end": os.getloadavg()[0], "rows": rows,
           "command": f"python bench/bench_train_speed.py --presets {a.presets} --batch {a.batch} --threads {a.threads} "
                      f"--steps {a.steps} --rounds {a.rounds} --settings {a.settings} --out {a.out}"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(a.out), json.dumps(out, indent=1) + "\n", a.overwrite)
    return out


if __name__ == "__main__":
    main()
