"""AR decoding benchmark (not a test): batch-1 tokens/s on the CPU, one thread.

Rungs measured on the same Llama weights (DESIGN.md speed ladder, autoregressive column):
  nocache   re-run the whole sequence per token (naive)
  hf        transformers `generate` with its KV cache (library peer); greedy, tokens must match ours
  cached    our static KV cache, prefill/decode split (eager)
  compiled  the same with the decode step under torch.compile(fullgraph=True)   [--compile]
  sjd       speculative Jacobi decoding: accepted tokens per pass and speed-up over `cached`

Decode speed does not depend on what the weights learned, so those rungs also run on random
weights of bigger presets. Speculative acceptance does: it is measured on a trained model
(--model FOLDER, or a small one trained here on the shapes set through the shared loop).

    python bench/bench_ar.py [--model FOLDER] [--compile] [--presets XS S B]
Writes bench/results/ar_decode.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from blinkgen.ar_family import ARGenerator, ARTask, TokenizerTask
from blinkgen.models.llama import Llama, llama_config
from blinkgen.sampling.ar import DecodeSettings, compiled_step, decode, decode_no_cache, draw_uniforms
from blinkgen.sampling.speculative import speculative_decode_batch

ROOT = Path(__file__).resolve().parent.parent
NAIVE_MAX_PARAMS = 20e6  # the O(N^2) rung takes minutes per image beyond this on one CPU thread
PROMPTS = ["a small red circle on a white background", "a large blue square", "two green triangles",
           "a yellow star on a black background", "a purple circle left of an orange square",
           "three small blue circles", "a big green square on a gray background", "a red triangle"]


def interleaved(fns: dict, repeats: int, results: dict) -> dict[str, float]:
    """Median wall time per function over `repeats` rounds after a warm-up round. Rounds run
    every function once (A B C A B C ...), so a change in machine load hits all of them alike
    (this CPU is shared). results[name] gets each function's last return value."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            results[name] = fn()
            if r:
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def speed_rungs(llama: Llama, P: int, N: int, repeats: int, use_compile: bool) -> dict:
    """Greedy batch-1 decoding of N tokens after a P-slot prefix, every rung on the same weights."""
    from transformers import LlamaForCausalLM

    llama = llama.eval()
    g = torch.Generator().manual_seed(0)
    prefix = torch.randn(1, P, llama.cfg.dim, generator=g) * 0.5  # (1, P, D), all slots valid
    pm = torch.ones(1, P, dtype=torch.bool)
    s = DecodeSettings(temperature=0)
    u = draw_uniforms([torch.Generator().manual_seed(0)], N)
    hf = LlamaForCausalLM(llama.cfg.to_hf_config()).eval()
    hf.load_state_dict(llama.hf_state_dict(), strict=not llama.cfg.tie_embeddings)

    def run_hf():
        with torch.inference_mode():
            return hf.generate(inputs_embeds=prefix, attention_mask=pm.long(), max_new_tokens=N,
                               min_new_tokens=N, do_sample=False, use_cache=True, pad_token_id=0)[:, -N:]

    rungs = {"hf_generate": run_hf, "cached": lambda: decode(llama, prefix, pm, u, s)}
    if llama.num_params() <= NAIVE_MAX_PARAMS:
        rungs["nocache"] = lambda: decode_no_cache(llama, prefix, pm, u, s)
    if use_compile:
        step = compiled_step()
        t = time.perf_counter()
        decode(llama, prefix, pm, u, s, step=step)
        compile_s = time.perf_counter() - t
        rungs["compiled"] = lambda: decode(llama, prefix, pm, u, s, step=step)
    res, tokens = {}, {}
    for name, sec in interleaved(rungs, repeats, tokens).items():
        res[name] = {"seconds": round(sec, 4), "tokens_per_s": round(N / sec, 1)}
    ref = tokens["cached"]
    out = {"params_M": round(llama.num_params() / 1e6, 2), "prefix_len": P, "new_tokens": N,
           "rungs": res, "same_tokens_as_cached": {k: bool(torch.equal(v.cpu(), ref)) for k, v in tokens.items()},
           "cached_speedup_vs_hf": round(res["hf_generate"]["seconds"] / res["cached"]["seconds"], 2)}
    if "nocache" in res:
        out["cached_speedup_vs_nocache"] = round(res["nocache"]["seconds"] / res["cached"]["seconds"], 2)
    if use_compile:
        out["compile_seconds"] = round(compile_s, 1)
    return out


def quick_model(run: Path, steps_tok: int, steps_ar: int) -> Path:
    """A small trained AR model on the shapes set, through the shared training loop."""
    from blinkgen.train import config as train_config
    from blinkgen.train import tasks
    from blinkgen.train.config import TrainConfig
    from blinkgen.train.loop import train

    # Until train/tasks.py and train/config.py register the AR family, register it for this run.
    tasks.TASKS.setdefault("ar", ARTask)
    tasks.TASKS.setdefault("tokenizer", TokenizerTask)
    if "tokenizer" not in train_config.FAMILIES:
        train_config.FAMILIES = (*train_config.FAMILIES, "tokenizer")
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


def speculative(gen: ARGenerator, windows: list[int], guidance: float) -> dict:
    """Batch 1, one prompt at a time: plain cached decode vs SJD, sampling and greedy."""
    m = gen.model
    N = m.cfg.n_tokens
    out = {}
    for mode, temp in (("sampling", 1.0), ("greedy", 0.0)):
        s = DecodeSettings(temperature=temp, guidance=guidance)
        plain_t, rows = [], {w: {"t": [], "tpp": [], "calls": [], "same": []} for w in windows}
        for i, prompt in enumerate(PROMPTS):
            pre, pm = m.conditioning(gen.encode_prompts([prompt]), s.cfg)
            t = time.perf_counter()
            plain = decode(m.llama, pre, pm, draw_uniforms([torch.Generator().manual_seed(i)], N), s)
            plain_t.append(time.perf_counter() - t)
            for w in windows:
                t = time.perf_counter()
                toks, st = speculative_decode_batch(m.llama, pre, pm, N, [torch.Generator().manual_seed(i)], s, w)
                r = rows[w]
                r["t"].append(time.perf_counter() - t)
                r["tpp"].append(st[0].tokens_per_pass)
                r["calls"].append(1 + st[0].passes)
                r["same"].append(bool(torch.equal(toks, plain)))
        tp = statistics.mean(plain_t)
        out[mode] = {"plain_cached": {"seconds": round(tp, 4), "tokens_per_s": round(N / tp, 1), "network_calls": N}}
        for w, r in rows.items():
            ts = statistics.mean(r["t"])
            out[mode][f"sjd_window_{w}"] = {
                "seconds": round(ts, 4), "tokens_per_s": round(N / ts, 1),
                "accepted_tokens_per_pass": round(statistics.mean(r["tpp"]), 3),
                "network_calls": round(statistics.mean(r["calls"]), 1),
                "speedup_vs_plain": round(tp / ts, 2),
                **({"identical_to_greedy": all(r["same"])} if temp == 0 else {})}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="trained AR model folder (default: train a small one)")
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench-ar"), help="where the small model is trained")
    ap.add_argument("--steps-tok", type=int, default=300)
    ap.add_argument("--steps-ar", type=int, default=300)
    ap.add_argument("--presets", nargs="*", default=["XS", "S", "B"], help="random-weight sizes for decode speed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--windows", type=int, nargs="*", default=[4, 16])
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd decode step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ar_decode.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    folder = Path(args.model) if args.model else quick_model(Path(args.run), args.steps_tok, args.steps_ar)
    gen = ARGenerator.from_folder(folder)
    cfg = gen.model.cfg
    result = {"what": "AR decoding, batch 1, CPU", "torch": torch.__version__, "threads": args.threads,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "model": str(folder),
              "model_training": gen.config.get("training"), "image_tokens": cfg.n_tokens,
              "codebook": cfg.tokenizer.codebook_size, "guidance": args.guidance, "speed": {}}
    P, N = cfg.prefix_len, cfg.n_tokens
    result["speed"]["trained"] = speed_rungs(gen.model.llama, P, N, args.repeats, args.compile)
    print(json.dumps(result["speed"]["trained"], indent=1), file=sys.stderr)
    for name in args.presets:
        torch.manual_seed(0)
        llama = Llama(llama_config(name, vocab_size=cfg.llama.vocab_size, max_seq_len=P + N))
        result["speed"][f"random_{name}"] = speed_rungs(llama, P, N, args.repeats, args.compile)
        print(name, json.dumps(result["speed"][f"random_{name}"]["rungs"]), file=sys.stderr)
    result["speculative"] = speculative(gen, args.windows, args.guidance)
    print(json.dumps(result["speculative"], indent=1), file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
