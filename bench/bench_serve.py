"""Load test of `blinkgen serve`: throughput and p50/p95 latency at 1, 4, 16 and 64 concurrent
clients, with dynamic batching on (--max-batch N) and off (--max-batch 1).

Not part of the test suite. The server runs as a real `python -m blinkgen.serve.commands`
subprocess on 127.0.0.1 (so the load generator does not share its GIL); clients are asyncio
tasks, each sending one `POST /v1/images/generations` (n=1) after another for a bounded time and
a bounded count. Results go to bench/results/serve_load.json.

    python bench/bench_serve.py                    # tiny random-weight model, CPU
    python bench/bench_serve.py --model default --seconds 20 --steps 8
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch: int, window_ms: float, device: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "blinkgen.serve.commands", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch), "--batch-window-ms", str(window_ms), "--max-queue", "1024",
           "--device", device, "--log-level", "warning", "--shutdown-grace-s", "5"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
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

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
        batch = (await client.get("/metrics")).text
    count = next((float(l.split()[-1]) for l in batch.splitlines() if l.startswith("blinkgen_batch_size_count")), 0)
    total = next((float(l.split()[-1]) for l in batch.splitlines() if l.startswith("blinkgen_batch_size_sum")), 0)
    return {"clients": clients, "requests": len(latencies), "errors": errors, "wall_s": round(wall, 3),
            "images_per_s": round(len(latencies) * body.get("n", 1) / wall, 3),
            "p50_s": round(pct(latencies, 0.50), 4) if latencies else None,
            "p95_s": round(pct(latencies, 0.95), 4) if latencies else None,
            "mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
            "mean_batch_size_so_far": round(total / count, 2) if count else None,
            "loadavg_1m_after": round(os.getloadavg()[0], 2)}  # a busy shared box skews everything


def model_baseline(model: str, device: str, steps: int, sizes=(1, 16)) -> list[dict]:
    """The model alone, no HTTP: seconds per call at batch 1 and 16 with the model's own split
    (text / sample / decode) when it reports one -- the ceiling batching can reach."""
    import blinkgen

    gen = blinkgen.load(model, device=device)
    settings = gen.settings(steps=steps)
    gen.sample(["warm-up"], [0], settings)
    rows = []
    for b in sizes:
        prompts = [f"baseline prompt {b}.{i}" for i in range(b)]  # unique: no prompt memo hits
        t = time.perf_counter()
        gen.sample(prompts, list(range(b)), settings)
        dt = time.perf_counter() - t
        split = {k: round(v, 4) for k, v in (getattr(gen, "last_timing", None) or {}).items()}
        rows.append({"batch": b, "seconds": round(dt, 4), "images_per_s": round(b / dt, 3), "split_s": split})
        print(f"model only    batch={b:<3d} {b / dt:8.2f} img/s  {split}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: a fresh tiny model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    ap.add_argument("--max-requests", type=int, default=400, help="per concurrency level")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=16, help="batching-on setting")
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = ap.parse_args()

    model = args.model
    if model is None:
        from blinkgen.testing import tiny_model

        model = str(tiny_model(Path(tempfile.mkdtemp(prefix="bench-serve-")) / "tiny"))
    body = {"prompt": "a red circle above a blue square", "n": 1, "steps": args.steps,
            "response_format": "b64_json"}
    levels = [int(c) for c in args.clients.split(",")]
    results = {"model": args.model or "tiny (random weights, blinkgen.testing.tiny_model)",
               "device": args.device, "steps": args.steps, "seconds_per_level": args.seconds,
               "window_ms": args.window_ms, "host": {"cpus": os.cpu_count(), "machine": platform.machine(),
                                                     "python": platform.python_version(),
                                                     "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
               "runs": {}}
    results["model_only"] = model_baseline(model, args.device, args.steps)
    for label, mb in (("batching_on", args.max_batch), ("batching_off", 1)):
        proc, base = start_server(model, mb, args.window_ms, args.device)
        try:
            asyncio.run(load_level(base, 1, 2.0, 4, body))  # warm the client path; not recorded
            rows = []
            for c in levels:
                row = asyncio.run(load_level(base, c, args.seconds, args.max_requests, body))
                print(f"{label:13s} max_batch={mb:<3d} clients={c:<3d} {row['images_per_s']:8.2f} img/s  "
                      f"p50 {row['p50_s']}s  p95 {row['p95_s']}s  errors {row['errors']}", flush=True)
                rows.append(row)
            results["runs"][label] = {"max_batch": mb, "levels": rows}
        finally:
            stop_server(proc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
