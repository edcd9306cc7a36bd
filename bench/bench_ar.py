"""AR decoding benchmark (not a test): batch-1 tokens/s on the CPU, what bounds it, and rungs.

Rungs on the same Llama weights (DESIGN.md speed ladder, autoregressive column), greedy, 64 tokens:
  nocache          re-run the whole sequence per token (naive; small presets only)
  hf_generate      transformers `generate` with its KV cache (library peer); tokens must equal ours
  cached_unfused   our static KV cache, module by module (`Llama.forward_cached`, the reference)
  cached           our static KV cache on the fused decode view (`speed.fused_llama.fused_view`): the default
  int8             `speed.int8.int8_view`: block Linears dynamically quantised (quality reported)
  compiled         the decode step under torch.compile(fullgraph=True), inductor
  compiled_frozen  the same with inductor freezing (weights folded and prepacked for oneDNN)
  sjd              speculative Jacobi decoding on a trained model: tokens per pass, speed-up

`rows` is the number of sequences a step carries: 2 is one image with classifier-free guidance
(the default way to sample), 1 is one image without it (the setting of the first version of this
bench). transformers cannot batch CFG from embeddings, so rows 2 runs two independent prefixes in
both implementations: the same shapes and work as one CFG image, and tokens stay comparable.

Floors, per token, on the same weights at the same rows, timed in the same rounds as the rungs
(the evidence for what bounds a step):
  weights_read     sum() over every matrix a step multiplies: the memory-traffic floor
  matmuls          F.linear over those matrices at `rows` rows: what MKL's GEMM takes for them
  dispatch         the same decode loop on a twin with head_dim 2 and FFN 8 (same layers, heads, ops;
                   arithmetic ~0): the per-op overhead floor of this code
  aten ops/token   counted with torch.profiler (Python-level and all, nested included)

The CPU is shared (other jobs): every timing is taken in interleaved rounds (A B C A B C ...) and
reported as wall time and as this process's CPU time (time.process_time), both min and median
over rounds; ratios use CPU-time minima, the least load-sensitive number. The load average is
recorded at start and end.

    python bench/bench_ar.py [--model FOLDER] [--presets XXS XS S] [--compile both|inductor|frozen|none]
Writes bench/results/ar_decode.json.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blinkgen.families.ar.pipeline import ARPipeline
from blinkgen.models.llama import KVCache, Llama, llama_config
from blinkgen.outputs import parse_args_with_out, write_text
from blinkgen.sampling.ar import (DecodeSettings, combine_cfg, decode, decode_no_cache, decode_one_token,
                                  draw_uniforms)
from blinkgen.speed.fused_llama import fused_view
from blinkgen.speed.int8 import int8_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ar_speculative import quick_model, speculative  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAIVE_MAX_PARAMS = 2e6  # the O(N^2) rung costs seconds per image beyond this on one thread
PROMPTS = ["a small red circle on a white background", "a large blue square", "two green triangles",
           "a yellow star on a black background", "a purple circle left of an orange square",
           "three small blue circles", "a big green square on a gray background", "a red triangle"]


def interleaved(fns: dict, repeats: int, results: dict | None = None, warmup: bool = True) -> dict[str, dict]:
    """Per function: wall and CPU seconds, min and median over `repeats` rounds (after a warm-up
    round). Each round runs every function once, so a change in machine load hits all alike.
    results[name] gets each function's last return value."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + int(warmup)):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            out = fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            if results is not None:
                results[name] = out
            if r or not warmup:
                wall[name].append(w)
                cpu[name].append(c)
    return {k: {"wall_min": min(wall[k]), "wall_median": statistics.median(wall[k]),
                "cpu_min": min(cpu[k]), "cpu_median": statistics.median(cpu[k])} for k in fns}


def _ms(x: float) -> float:
    return round(1e3 * x, 3)


def step_matrices(llama: Llama) -> list[torch.Tensor]:
    """Every weight matrix one decode step multiplies (fused view: qkv, o, gate_up, down; lm_head)."""
    net = fused_view(llama)
    return [w for b in net.layers for w in (b.qkv.weight, b.o.weight, b.gate_up.weight, b.down.weight)] + \
        [net.lm_head.weight]


def dispatch_twin(llama: Llama) -> Llama:
    """Same layers, heads, vocabulary and op sequence; head_dim 2 and FFN 8, so ~no arithmetic."""
    c = llama.cfg
    torch.manual_seed(0)
    return Llama(llama_config("tiny", vocab_size=c.vocab_size, max_seq_len=c.max_seq_len, n_layers=c.n_layers,
                              n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, dim=2 * c.n_heads,
                              intermediate_size=8)).eval()


def count_ops(fn) -> tuple[int, int]:
    """(all aten ops, Python-level aten ops) dispatched by fn()."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    evs = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in evs if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return len(evs), len(top)


def hf_model(llama: Llama):
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(llama.cfg.to_hf_config()).eval()
    hf.load_state_dict(llama.hf_state_dict(), strict=not llama.cfg.tie_embeddings)
    return hf


def hf_generate(hf, prefix: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(prefix.shape[:2], dtype=torch.long)
    with torch.inference_mode():
        return hf.generate(inputs_embeds=prefix, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, use_cache=True, pad_token_id=0)[:, -n:]


def compile_step(frozen: bool):
    """A fresh compiled decode step. Dynamo's cache is reset first: a frozen graph has the weights
    folded in, and must never be reused for other weights of the same shapes."""
    torch._dynamo.reset()
    return torch.compile(decode_one_token, fullgraph=True, dynamic=False, options={"freezing": frozen})


def speed_rows(llama: Llama, hf, P: int, N: int, rows: int, repeats: int, compile_modes: list[str]) -> dict:
    """Every rung at `rows` sequences, greedy, N tokens after a P-slot prefix, plus the floors."""
    g = torch.Generator().manual_seed(rows)
    prefix = torch.randn(rows, P, llama.cfg.dim, generator=g) * 0.5  # (rows, P, D), all slots valid
    pm = torch.ones(rows, P, dtype=torch.bool)
    s = DecodeSettings(temperature=0)
    u = draw_uniforms([torch.Generator().manual_seed(i) for i in range(rows)], N)
    i8 = int8_view(llama)
    rungs = {"hf_generate": lambda: hf_generate(hf, prefix, N),
             "cached_unfused": lambda: decode(llama, prefix, pm, u, s),
             "cached": lambda: decode(fused_view(llama), prefix, pm, u, s),
             "int8": lambda: decode(i8, prefix, pm, u, s)}
    if llama.num_params() <= NAIVE_MAX_PARAMS and rows == 1:
        rungs["nocache"] = lambda: decode_no_cache(llama, prefix, pm, u, s)
    out: dict = {"rows": rows, "rungs": {}, "compile": {}}
    tokens: dict = {}
    ffns, mb = floor_fns(llama, P, N, rows)
    times = interleaved({**rungs, **ffns}, repeats, tokens)  # floors in the same rounds as the rungs
    ft = {k: times.pop(k) for k in ffns}
    for mode in compile_modes:  # each compiled step timed next to `cached`, then dropped
        step = compile_step(mode == "compiled_frozen")
        w, c = time.perf_counter(), time.process_time()
        decode(fused_view(llama), prefix, pm, u, s, step=step)
        out["compile"][mode] = {"first_call_wall_s": round(time.perf_counter() - w, 1),
                                "first_call_cpu_s": round(time.process_time() - c, 1)}
        compiled = lambda step=step: decode(fused_view(llama), prefix, pm, u, s, step=step)  # noqa: E731
        pair = interleaved({"cached": rungs["cached"], mode: compiled}, repeats, tokens)
        times[mode] = pair[mode]
        out["compile"][mode]["cached_cpu_min_same_rounds"] = pair["cached"]["cpu_min"]
        del step
        torch._dynamo.reset()
    ref = tokens["cached"]
    for name, t in times.items():
        out["rungs"][name] = {"ms_per_token_cpu": _ms(t["cpu_min"] / N), "ms_per_token_wall": _ms(t["wall_min"] / N),
                              "tokens_per_s_cpu": round(N / t["cpu_min"], 1), "tokens_per_s_wall": round(N / t["wall_min"], 1),
                              "seconds_cpu_median": round(t["cpu_median"], 4), "seconds_wall_median": round(t["wall_median"], 4),
                              "same_tokens_as_cached": bool(torch.equal(tokens[name].cpu(), ref)),
                              "greedy_agreement_with_cached": round((tokens[name].cpu() == ref).float().mean().item(), 4)}
    base = times["cached"]["cpu_min"]
    out["speedup_vs_hf_generate_cpu"] = {k: round(times["hf_generate"]["cpu_min"] / t["cpu_min"], 2)
                                         for k, t in times.items() if k != "hf_generate"}
    out["speedup_vs_cached_cpu"] = {k: round(base / t["cpu_min"], 2) for k, t in times.items() if k != "cached"}
    per_tok = {k: t["cpu_min"] / N for k, t in ft.items()}
    out["floors"] = f = {
        "weights_mb": round(mb, 2), "weights_read_ms": _ms(per_tok["floor_weights_read"]),
        "weights_read_gb_per_s": round(mb / 1e3 / per_tok["floor_weights_read"], 1),
        "matmuls_ms": _ms(per_tok["floor_matmuls"]), "matmuls_gb_per_s": round(mb / 1e3 / per_tok["floor_matmuls"], 1),
        "dispatch_ms_per_token": _ms(per_tok["floor_dispatch"])}
    hf_ms = times["hf_generate"]["cpu_min"] / N * 1e3
    out["analysis"] = {
        "hf_ms_per_token": round(hf_ms, 3), "target_3x_ms_per_token": round(hf_ms / 3, 3),
        "cached_ms_per_token": round(base / N * 1e3, 3),
        "floor_dispatch_plus_matmuls_ms": round(f["dispatch_ms_per_token"] + f["matmuls_ms"], 3),
        "floor_dispatch_plus_weights_read_ms": round(f["dispatch_ms_per_token"] + f["weights_read_ms"], 3),
        "eager_fp32_can_reach_3x": hf_ms / 3 >= f["dispatch_ms_per_token"] + f["matmuls_ms"],
        "note": "eager fp32 needs at least dispatch + matmuls per token (this code's op sequence, MKL's GEMM); "
                "removing dispatch (compile) leaves matmuls; a better GEMM leaves the weights read; int8 divides it by 4"}
    return out


def floor_fns(llama: Llama, P: int, N: int, rows: int) -> tuple[dict, float]:
    """Functions timed in the same rounds as the rungs, each doing N tokens' worth of one floor:
    read every step matrix (sum), multiply by every step matrix (F.linear at `rows` rows), and the
    whole decode on the dispatch twin. Returns ({name: fn}, MB of step matrices)."""
    mats = step_matrices(llama)
    xs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in mats}
    twin = dispatch_twin(llama)
    prefix = torch.randn(rows, P, twin.cfg.dim)
    pm = torch.ones(rows, P, dtype=torch.bool)
    u = draw_uniforms([torch.Generator().manual_seed(i) for i in range(rows)], N)
    s = DecodeSettings(temperature=0)

    @torch.inference_mode()
    def repeat(fn):
        for _ in range(N):
            fn()

    fns = {"floor_weights_read": lambda: repeat(lambda: [w.sum() for w in mats]),
           "floor_matmuls": lambda: repeat(lambda: [F.linear(xs[w.shape[1]], w) for w in mats]),
           "floor_dispatch": lambda: decode(twin, prefix, pm, u, s)}
    return fns, sum(w.numel() * w.element_size() for w in mats) / 1e6


def op_counts(llama: Llama, hf, P: int, rows: int) -> dict:
    """aten ops per decoded token (Python-level and all): ours fused/unfused, transformers."""
    prefix = torch.randn(rows, P, llama.cfg.dim) * 0.5
    pm = torch.ones(rows, P, dtype=torch.bool)
    s = DecodeSettings(temperature=0)
    out = {}
    for name, run in (("cached", lambda n: decode(fused_view(llama), prefix, pm,
                                                  draw_uniforms([torch.Generator()] * rows, n), s)),
                      ("cached_unfused", lambda n: decode(llama, prefix, pm,
                                                          draw_uniforms([torch.Generator()] * rows, n), s)),
                      ("hf_generate", lambda n: hf_generate(hf, prefix, n))):
        run(2)
        a, b = count_ops(lambda: run(2)), count_ops(lambda: run(6))
        out[name] = {"all": (b[0] - a[0]) / 4, "python_level": (b[1] - a[1]) / 4}
    return out


def preset_speed(llama: Llama, P: int, N: int, rows_list: list[int], repeats: int, compile_modes: list[str],
                 compile_rows: int) -> dict:
    llama = llama.eval()
    hf = hf_model(llama)
    out = {"params_M": round(llama.num_params() / 1e6, 2), "prefix_len": P, "new_tokens": N,
           "aten_ops_per_token": op_counts(llama, hf, P, max(rows_list))}
    for rows in rows_list:
        out[f"rows{rows}"] = speed_rows(llama, hf, P, N, rows, repeats, compile_modes if rows == compile_rows else [])
        r = out[f"rows{rows}"]
        print(f"  rows {rows}: " + "  ".join(f"{k} {v['ms_per_token_cpu']:.2f}" for k, v in r["rungs"].items())
              + " ms/token (CPU); floors " + json.dumps(r["floors"]), file=sys.stderr, flush=True)
    return out


def teacher_forced_logits(net, prefix: torch.Tensor, pm: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (R, N, V) of every image position given `tokens` (B, N), rows as in `decode`."""
    R, P = pm.shape
    N = tokens.shape[1]
    fed = tokens.repeat(R // tokens.shape[0], 1)[:, :-1]  # (R, N-1): both CFG halves see the same image
    x = torch.cat([prefix, net.embed(fed)], dim=1)  # (R, P+N-1, D)
    key_mask = torch.cat([pm, pm.new_ones(R, N - 1)], dim=1)
    cache = KVCache.allocate(net.cfg, R, P + N - 1, x.dtype, x.device)
    with torch.inference_mode():
        h = net.forward_cached(x, torch.arange(P + N - 1), cache, key_mask)
        return net.head(h[:, P - 1:]).float()


def quality_checks(gen: ARPipeline, guidance: float, compile_modes: list[str]) -> dict:
    """On a trained model and real prompts (CFG, greedy): how far int8 and compiled decoding move
    from fp32 eager. Sequence agreement compounds after the first different token; teacher-forced
    agreement (argmax of the guided logits on the fp32 sequence) and the max logit difference do not."""
    m = gen.model
    N, V = m.cfg.n_tokens, m.cfg.llama.vocab_size
    s = DecodeSettings(temperature=0, guidance=guidance)
    cases = []
    for i, prompt in enumerate(PROMPTS):
        pre, pm = m.conditioning(gen.encode_prompts([prompt]), True)  # (2, P, D): [cond; uncond]
        u = draw_uniforms([torch.Generator().manual_seed(i)], N)
        ref = decode(fused_view(m.llama), pre, pm, u, s)  # (1, N)
        cases.append((pre, pm, u, ref, teacher_forced_logits(fused_view(m.llama), pre, pm, ref)))  # logits (2, N, V)
    i8 = int8_view(m.llama)
    out = {}
    for k in ["int8", *compile_modes]:
        if k == "int8":
            run = lambda pre, pm, u: decode(i8, pre, pm, u, s)  # noqa: E731
        else:
            step = compile_step(k == "compiled_frozen")
            run = lambda pre, pm, u, step=step: decode(fused_view(m.llama), pre, pm, u, s, step=step)  # noqa: E731
        seq = [(run(pre, pm, u) == ref).float().mean().item() for pre, pm, u, ref, _ in cases]
        out[k] = {"sequence_agreement": round(statistics.mean(seq), 4),
                  "identical_sequences": sum(x == 1.0 for x in seq), "prompts": len(PROMPTS)}
        if k == "int8":
            tf, diff, spread = [], [], []
            for pre, pm, u, ref, lref in cases:
                lq = teacher_forced_logits(i8, pre, pm, ref)
                diff.append((lq - lref).abs().max().item())
                spread.append(lref.std().item())
                guided = [combine_cfg(x.reshape(2 * N, V), guidance).argmax(-1) for x in (lref, lq)]  # (N,) each
                tf.append((guided[0] == guided[1]).float().mean().item())
            out[k].update(teacher_forced_agreement=round(statistics.mean(tf), 4),
                          max_logit_abs_diff=round(max(diff), 4), logit_std=round(statistics.mean(spread), 4))
        torch._dynamo.reset()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default=None, help="trained AR model folder (default: train a small one, or reuse it)")
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench-ar"), help="where the small model is trained")
    ap.add_argument("--steps-tok", type=int, default=300)
    ap.add_argument("--steps-ar", type=int, default=300)
    ap.add_argument("--presets", nargs="*", default=["XXS", "XS", "S"], help="random-weight sizes for decode speed")
    ap.add_argument("--rows", type=int, nargs="*", default=[2, 1], help="sequences per step (2 = one CFG image)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per rung (after a warm-up round)")
    ap.add_argument("--windows", type=int, nargs="*", default=[4, 16])
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--compile", choices=["both", "inductor", "frozen", "none"], default="both",
                    help="compiled rungs (at --compile-rows only: each compile costs tens of seconds)")
    ap.add_argument("--compile-rows", type=int, default=2)
    ap.add_argument("--warm-compile-cache", action="store_true",
                    help="let inductor reuse its on-disk cache (default: a fresh one, so compile times are cold)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ar_decode.json"))
    args = parse_args_with_out(ap, argv)  # an existing --out: refused now, exit 2
    torch.set_num_threads(args.threads)
    if not args.warm_compile_cache:  # honest compile times: nothing from earlier runs
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp = tempfile.mkdtemp(prefix="bench-ar-inductor-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    compile_modes = {"both": ["compiled", "compiled_frozen"], "inductor": ["compiled"],
                     "frozen": ["compiled_frozen"], "none": []}[args.compile]
    t0 = time.perf_counter()
    load_start = os.getloadavg()

    folder = Path(args.model) if args.model else quick_model(Path(args.run), args.steps_tok, args.steps_ar)
    gen = ARPipeline.from_folder(folder)
    cfg = gen.model.cfg
    result = {"what": "AR decoding, batch 1, CPU", "command": "python bench/bench_ar.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "torch": torch.__version__, "threads": args.threads,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average_at_start": [round(x, 2) for x in load_start], "model": str(folder),
              "model_training": gen.config.get("training"), "image_tokens": cfg.n_tokens,
              "codebook": cfg.tokenizer.codebook_size, "guidance": args.guidance,
              "timing": "ms_per_token_cpu = min over rounds of process CPU time / tokens (ratios use it); "
                        "_wall = wall clock; medians in seconds per 64-token decode. Absolute times moved by up "
                        "to ~40% between runs on this shared VM (ratios within a run by much less)",
              "inductor_cache": "warm" if args.warm_compile_cache else "cold (fresh directory)", "speed": {}}
    P, N = cfg.prefix_len, cfg.n_tokens
    for name in args.presets:
        torch.manual_seed(0)
        llama = Llama(llama_config(name, vocab_size=cfg.llama.vocab_size, max_seq_len=P + N))
        print(f"random_{name}", file=sys.stderr, flush=True)
        result["speed"][f"random_{name}"] = preset_speed(llama, P, N, args.rows, args.repeats, compile_modes,
                                                         args.compile_rows)
    print("quality checks", file=sys.stderr, flush=True)
    result["quality_vs_fp32_eager"] = quality_checks(gen, args.guidance, compile_modes)
    print(json.dumps(result["quality_vs_fp32_eager"]), file=sys.stderr, flush=True)
    result["speculative"] = speculative(gen, args.windows, args.guidance, PROMPTS)
    print(json.dumps(result["speculative"], indent=1), file=sys.stderr)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2) + "\n", args.overwrite)
    print(f"{out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
