"""Load test of `blinkgen serve`: throughput and p50/p95 latency at 1, 4, 16 and 64 concurrent
clients, with dynamic batching on (--max-batch N) and off (--max-batch 1), and -- in the same run,
same settings -- the model-only batching ceiling it is judged against.

Not part of the test suite. The server runs as a real `python -m blinkgen.serve.commands`
subprocess on 127.0.0.1 (so the load generator does not share its GIL); clients are asyncio
tasks, each sending one `POST /v1/images/generations` (n=1) after another for a bounded time and
a bounded count. Results go to bench/results/serve_load.json.

The ceiling ("model_only"): the generator called directly, no HTTP, no queue, no PNG encoding, at
batch 1 and at batch --max-batch with the same steps and default guidance/sampler, timed as the
median of repeated calls over --model-seconds per cell. Twice: with every prompt new (text
encodings computed, as for the server's load, whose prompts are all distinct) and with prompts
already in the generator's memo (text encoding skipped). `gain_ceiling` = images/s at max_batch
over images/s at batch 1; the `summary` then says, per client level, what fraction of that gain
the server reaches (`server_gain` = batching-on over batching-off images/s).

    python bench/bench_serve.py                    # tiny random-weight model, CPU
    python bench/bench_serve.py --model default --seconds 20 --steps 8
    python bench/bench_serve.py --levels 1,16 --seconds 3 --model-seconds 2   # quick smoke
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from blinkgen.outputs import parse_args_with_out, write_text

from blinkgen.pipeline import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model_folder(prefix: str = "bench-serve-") -> str:
    """A fresh tiny random-weight model: the default, so the bench runs anywhere in seconds."""
    from blinkgen.families import get

    tmp = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the server subprocess ends before exit
    return str(get("diffusion").make_tiny(Path(tmp) / "tiny"))


def start_server(model: str, max_batch: int, window_ms: float, device: str, extra_args=(),
                 env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A real server subprocess on a free port, returned once /ready answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "blinkgen.serve.commands", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch), "--batch-window-ms", str(window_ms), "--max-queue", "1024",
           "--device", device, "--log-level", "warning", "--shutdown-grace-s", "5", *map(str, extra_args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server not ready after 900 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def metric(text: str, name: str) -> float:
    """One unlabelled sample from Prometheus text (0 if absent)."""
    return next((float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " ")), 0.0)


async def load_level(base: str, clients: int, seconds: float, max_requests: int, body: dict) -> dict:
    """`clients` tasks in closed loops; stops starting requests after `seconds` or `max_requests`."""
    latencies: list[float] = []
    errors = 0
    started = 0
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        t_end = time.monotonic() + seconds

        async def worker(k: int):
            nonlocal errors, started
            i = 0
            while time.monotonic() < t_end and started < max_requests:
                started += 1
                t = time.perf_counter()
                r = await client.post("/v1/images/generations",
                                      json={**body, "prompt": f"{body['prompt']} #{k}.{i}", "seed": k * 1000 + i})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1
                i += 1

        before = (await client.get("/metrics")).text
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
        after = (await client.get("/metrics")).text
    # this level's model calls only (the counters are cumulative over the server's life)
    count = metric(after, "blinkgen_batch_size_count") - metric(before, "blinkgen_batch_size_count")
    total = metric(after, "blinkgen_batch_size_sum") - metric(before, "blinkgen_batch_size_sum")
    return {"clients": clients, "requests": len(latencies), "errors": errors, "wall_s": round(wall, 3),
            "images_per_s": round(len(latencies) * body.get("n", 1) / wall, 3),
            "p50_s": round(pct(latencies, 0.50), 4) if latencies else None,
            "p95_s": round(pct(latencies, 0.95), 4) if latencies else None,
            "mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
            "mean_batch_size": round(total / count, 2) if count else None,
            "loadavg_1m_after": round(os.getloadavg()[0], 2)}  # a busy shared box skews everything


def time_calls(gen, prompts_for, b: int, settings, seconds: float, min_calls: int = 3) -> dict:
    """Median seconds of `gen.sample` at batch `b` over repeated calls (at least `min_calls`, then
    until `seconds` have passed); the median resists other jobs on a shared box."""
    times, splits = [], []
    t_end = time.perf_counter() + seconds
    k = 0
    while k < min_calls or time.perf_counter() < t_end:
        prompts = prompts_for(b, k)
        t = time.perf_counter()
        res = gen.sample(requests(prompts, list(range(b))), settings)
        times.append(time.perf_counter() - t)
        splits.append(dict(res.timings))
        k += 1
    med = statistics.median(times)
    split = {key: round(statistics.median(sp.get(key, 0.0) for sp in splits), 4) for key in splits[-1]}
    return {"batch": b, "calls": k, "median_s": round(med, 4), "images_per_s": round(b / med, 3),
            "split_median_s": split}


def model_only(model: str, device: str, steps: int, max_batch: int, seconds: float) -> dict:
    """The generator alone at batch 1 and `max_batch`, text encodings computed and memoised:
    the gain batching can reach at most (see the module docstring)."""
    import blinkgen

    gen = blinkgen.load(model, device=device)
    settings = gen.settings(steps=steps)
    sizes = sorted({1, max_batch})
    fixed = {b: [f"memoised prompt {b}.{i}" for i in range(b)] for b in sizes}
    cases = {
        # a new prompt on every call, as the load test sends: each call encodes its prompts
        "text_encoded": lambda b, k: [f"fresh prompt {b}.{k}.{i}" for i in range(b)],
        # the same prompts on every call, memoised by the warm-up: no text encoding in the timing
        "text_memoised": lambda b, k: fixed[b],
    }
    out: dict = {"max_batch": max_batch, "steps": steps, "seconds_per_cell": seconds,
                 "server_load_matches": "text_encoded"}
    for name, prompts_for in cases.items():
        for b in sizes:  # warm each batch shape (first calls at a new shape are slower) and the memo
            gen.sample(requests(fixed[b], list(range(b))), settings)
        rows = [time_calls(gen, prompts_for, b, settings, seconds) for b in sizes]
        gain = rows[-1]["images_per_s"] / rows[0]["images_per_s"]
        out[name] = {"rows": rows, "gain_ceiling": round(gain, 3)}
        for r in rows:
            print(f"model only    {name:14s} batch={r['batch']:<3d} {r['images_per_s']:8.2f} img/s  "
                  f"({r['calls']} calls, median split {r['split_median_s']})", flush=True)
        print(f"model only    {name:14s} gain ceiling x{gain:.2f} (batch {max_batch} vs 1)", flush=True)
    return out


def summarize(results: dict) -> list[dict]:
    """Per client level: the server's batching gain and the fraction of the model-only ceiling
    it reaches. `fraction_of_gain` compares the gains themselves (1.0: the server batches as
    well as the bare model); `fraction_of_extra` compares what batching adds above 1x, the
    stricter view when the ceiling is small."""
    runs, ceiling = results["runs"], results["model_only"]["text_encoded"]["gain_ceiling"]
    if "batching_on" not in runs or "batching_off" not in runs:
        return []
    off = {r["clients"]: r for r in runs["batching_off"]["levels"]}
    model_top = results["model_only"]["text_encoded"]["rows"][-1]["images_per_s"]
    rows = []
    for on in runs["batching_on"]["levels"]:
        base = off.get(on["clients"])
        if not base or not base["images_per_s"] or not on["images_per_s"]:
            continue
        gain = on["images_per_s"] / base["images_per_s"]
        rows.append({"clients": on["clients"], "server_gain": round(gain, 3), "gain_ceiling": ceiling,
                     "fraction_of_gain": round(gain / ceiling, 3),
                     "fraction_of_extra": round((gain - 1) / (ceiling - 1), 3) if ceiling > 1.001 else None,
                     "server_vs_model_at_max_batch": round(on["images_per_s"] / model_top, 3),
                     "mean_batch_size": on["mean_batch_size"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: a fresh tiny model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--levels", "--clients", dest="levels", default="1,4,16,64",
                    help="concurrent clients per level, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    ap.add_argument("--max-requests", type=int, default=400, help="per concurrency level")
    ap.add_argument("--model-seconds", type=float, default=10.0,
                    help="model-only timing per (batch, memo) cell; at least 3 calls each")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=16, help="batching-on setting and model-only batch")
    ap.add_argument("--window-ms", type=float, default=0.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = parse_args_with_out(ap)  # an existing --out: refused now, exit 2

    model = args.model or tiny_model_folder()
    body = {"prompt": "a red circle above a blue square", "n": 1, "steps": args.steps,
            "response_format": "b64_json"}
    levels = [int(c) for c in args.levels.split(",")]
    results = {"model": args.model or "tiny (random weights, blinkgen.families.diffusion.folder.tiny)",
               "device": args.device, "steps": args.steps, "seconds_per_level": args.seconds,
               "levels": levels, "window_ms": args.window_ms,
               "server_prompts": "distinct per request (text encoded each time, like model_only.text_encoded)",
               "host": {"cpus": os.cpu_count(), "machine": platform.machine(),
                        "python": platform.python_version(),
                        "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
               "runs": {}}
    results["model_only"] = model_only(model, args.device, args.steps, args.max_batch, args.model_seconds)
    for label, mb in (("batching_on", args.max_batch), ("batching_off", 1)):
        proc, base = start_server(model, mb, args.window_ms, args.device)
        try:
            asyncio.run(load_level(base, 1, 2.0, 4, body))  # warm the client path; not recorded
            rows = []
            for c in levels:
                row = asyncio.run(load_level(base, c, args.seconds, args.max_requests, body))
                print(f"{label:13s} max_batch={mb:<3d} clients={c:<3d} {row['images_per_s']:8.2f} img/s  "
                      f"p50 {row['p50_s']}s  p95 {row['p95_s']}s  mean batch {row['mean_batch_size']}  "
                      f"errors {row['errors']}", flush=True)
                rows.append(row)
            results["runs"][label] = {"max_batch": mb, "levels": rows}
        finally:
            stop_server(proc)
    results["summary"] = summarize(results)
    for r in results["summary"]:
        print(f"summary       clients={r['clients']:<3d} server gain x{r['server_gain']:.2f} of ceiling "
              f"x{r['gain_ceiling']:.2f}: {100 * r['fraction_of_gain']:.0f}% of the gain", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(results, indent=2) + "\n", args.overwrite)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
