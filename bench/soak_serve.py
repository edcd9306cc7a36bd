"""Memory soak of `blinkgen serve`: does the server's RSS stay bounded under a long mixed load?

Not part of the test suite. The real server runs as a subprocess (`bench_serve.start_server`),
with two API keys so the per-key ownership path is exercised too. --clients asyncio clients
(default 8) loop for --seconds (default 600) over a weighted mix:

    gen_b64     POST /v1/images/generations, b64_json, n=1..2
    gen_url     the same with response_format=url, then GET the link
    job_sse     POST /v1/jobs, then follow /v1/jobs/{id}/events to the final event
    job_cancel  POST /v1/jobs (longer), DELETE it after 0-0.5 s (200, or 409 if it already finished)
    malformed   one of: bad JSON, unknown field, n=0, an over-cap body (413), a wrong key (401),
                an unknown job id and another key's job id (both 404)

Every --sample-s (default 5) it records the server's RSS (VmRSS from /proc/PID/status; psutil
if there is no /proc) and the server's own `blinkgen_*_kept*` gauges, queue depth and images
made. Output (--out, default bench/results/serve_soak.json): the RSS series, requests done per
kind, errors per kind (any 5xx and transport failures counted separately from unexpected 4xx),
and a verdict on the second half of the run -- the first half is warm-up: allocator arenas,
torch's per-shape buffers, the text memo and the kept-result stores filling to steady state.

Verdict: "bounded" if the least-squares RSS slope over the second half is below
--max-slope-mb-per-min (default 1.0), else "growing". Why 1 MB/min: on a bounded server, RSS in
the second half only wobbles by allocator noise (a few MB either way, no trend over minutes);
1 MB/min is 1.4 GB a day, a leak any long-lived server must not have; and the smallest leak worth
finding -- one request's Job plus its PNGs kept forever (>= ~5 KB even for the 32-px tiny model:
two ~3 KB PNGs, their base64, the job's dicts) at the >= 4 requests/s that 8 clients sustain on
the tiny model -- is >= 1.2 MB/min, above it. The output also gives the slope divided by the
request rate (KB per request), the figure to judge a borderline slope by. "too_short" (under
three samples in the second half) and "too_little_load" (under 20 requests finished in it: a
starved or stuck server) mean the run cannot judge; "crashed" that the server died.

Settings that make the second half a steady state: --url-ttl-s defaults to 60 here (not the
server's 3600), so finished jobs and url images start expiring after one minute and their stores
stop growing well before half-time instead of filling toward their count/byte caps all run long;
prompts come from a pool of --prompts (default 64) distinct strings, so the generator's text memo
(capped in the model code: `DiffusionPipeline.MEMO_MAX`, 512) fills at once. A pool over the cap
exercises its clearing instead, at the price of a sawtooth in RSS.

On a box shared with other jobs, give the server one thread (it inherits the environment):
torch's threads of a starved process wait on each other at every op, and the tiny model then made
2 images in 150 s instead of ~40 requests/s with OMP_NUM_THREADS=1 on the same 2-core box.

    OMP_NUM_THREADS=1 python bench/soak_serve.py             # tiny model, 10 minutes
    python bench/soak_serve.py --seconds 30 --out /tmp/soak.json   # smoke
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import ROOT, start_server, stop_server, tiny_model_folder  # noqa: E402
from blinkgen.outputs import parse_args_with_out, write_text

KEYS = ("sk-soak-alpha-0123456789", "sk-soak-bravo-9876543210")
MIX = {"gen_b64": 30, "gen_url": 20, "job_sse": 25, "job_cancel": 15, "malformed": 10}  # weights
OVER_CAP = b'{"prompt": "' + b"a" * 70_000 + b'"}'  # over the server's 64 KiB default body cap


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (VmRSS), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB -> MB
    except FileNotFoundError:
        if not os.path.isdir("/proc"):
            import psutil  # only where there is no /proc; not a dependency of the project

            try:
                return psutil.Process(pid).memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                return None
    return None


SERVER_GAUGES = ("blinkgen_jobs_kept", "blinkgen_images_kept", "blinkgen_kept_bytes", "blinkgen_queue_depth ",
                 "blinkgen_images_generated_total ")


def server_gauges(metrics_text: str) -> dict:
    """The server's own view: what it holds (`*_kept*`), its queue, images made so far."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith(SERVER_GAUGES):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def fit_slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope dy/dt (0 for fewer than two points)."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0


class Tally:
    """Requests done per kind; errors per kind, 5xx and transport failures kept apart."""

    def __init__(self):
        self.done, self.unexpected, self.server_errors, self.transport = Counter(), Counter(), Counter(), Counter()
        self.examples: list[str] = []  # the first few surprises, for the report

    def check(self, kind: str, r: httpx.Response, ok: tuple[int, ...]) -> bool:
        """True if the status is one of `ok`; otherwise count it (read the body first)."""
        if r.status_code in ok:
            return True
        (self.server_errors if r.status_code >= 500 else self.unexpected)[kind] += 1
        self.example(f"{kind}: {r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:200]}")
        return False

    def failed(self, kind: str, e: Exception) -> None:
        self.transport[kind] += 1
        self.example(f"{kind}: {type(e).__name__}: {e}")

    def example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)


async def one_request(client: httpx.AsyncClient, kind: str, rng: random.Random, key: str, other_job: list,
                      prompts: list[str], steps: int, tally: Tally) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    body = {"prompt": rng.choice(prompts), "steps": steps, "seed": rng.randrange(2**32)}
    if kind in ("gen_b64", "gen_url"):
        fmt = "b64_json" if kind == "gen_b64" else "url"
        r = await client.post("/v1/images/generations", json={**body, "n": rng.randint(1, 2),
                                                               "response_format": fmt}, headers=auth)
        if tally.check(kind, r, (200,)) and fmt == "url":
            for d in r.json()["data"]:
                tally.check(kind, await client.get(d["url"]), (200,))
    elif kind == "job_sse":
        r = await client.post("/v1/jobs", json={**body, "n": rng.randint(1, 2), "response_format": "url"},
                              headers=auth)
        if not tally.check(kind, r, (202,)):
            return
        job_id, final = r.json()["id"], None
        other_job[:] = [job_id, key]
        async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth) as s:
            if s.status_code != 200:
                await s.aread()
                tally.check(kind, s, (200,))
                return
            async for line in s.aiter_lines():
                if line.startswith("event:") and line[6:].strip() != "progress":
                    final = line[6:].strip()
        if final != "done":
            tally.unexpected[kind] += 1
            tally.example(f"{kind}: stream ended with {final!r}")
    elif kind == "job_cancel":
        r = await client.post("/v1/jobs", json={**body, "n": rng.randint(1, 3), "steps": steps * 4},
                              headers=auth)
        if not tally.check(kind, r, (202,)):
            return
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        tally.check(kind, await client.delete(f"/v1/jobs/{r.json()['id']}", headers=auth), (200, 409))
    elif kind == "malformed":
        case = rng.randrange(7)
        if case == 0:
            r = await client.post("/v1/jobs", content=b"{", headers={**auth, "content-type": "application/json"})
            tally.check(kind, r, (400,))
        elif case == 1:
            tally.check(kind, await client.post("/v1/images/generations", json={**body, "stpes": 2},
                                                headers=auth), (400,))
        elif case == 2:
            tally.check(kind, await client.post("/v1/jobs", json={**body, "n": 0}, headers=auth), (400,))
        elif case == 3:
            r = await client.post("/v1/images/generations", content=OVER_CAP,
                                  headers={**auth, "content-type": "application/json"})
            tally.check(kind, r, (413,))
        elif case == 4:
            r = await client.post("/v1/jobs", json=body, headers={"Authorization": "Bearer not-a-key"})
            tally.check(kind, r, (401,))
        elif case == 5:
            tally.check(kind, await client.get("/v1/jobs/job_" + "f" * 24, headers=auth), (404,))
        else:  # another key's job must look unknown
            if other_job and other_job[1] != key:
                tally.check(kind, await client.get(f"/v1/jobs/{other_job[0]}", headers=auth), (404,))
            else:
                tally.check(kind, await client.get("/v1/jobs/job_" + "e" * 24, headers=auth), (404,))


async def drive(base: str, proc, args, prompts: list[str]) -> dict:
    tally = Tally()
    samples: list[dict] = []
    t0 = time.monotonic()
    t_end = t0 + args.seconds
    limits = httpx.Limits(max_connections=args.clients * 2 + 4, max_keepalive_connections=args.clients * 2 + 4)
    kinds, weights = list(MIX), list(MIX.values())
    last_job: list = []  # [job id, its key]: the most recent job, for cross-key probes

    async with httpx.AsyncClient(base_url=base, timeout=args.request_timeout_s, limits=limits) as client:
        async def sample() -> None:
            entry = {"t_s": round(time.monotonic() - t0, 2), "rss_mb": rss_mb(proc.pid),
                     "requests_done": sum(tally.done.values())}
            try:
                entry["server"] = server_gauges((await client.get("/metrics", timeout=30)).text)
            except httpx.HTTPError as e:
                entry["server_error"] = f"{type(e).__name__}"
            samples.append(entry)
            print(f"t={entry['t_s']:7.1f}s  rss {entry['rss_mb']} MB  requests {entry['requests_done']}  "
                  f"kept {entry.get('server', {}).get('blinkgen_jobs_kept')} jobs  queue "
                  f"{entry.get('server', {}).get('blinkgen_queue_depth')} images  load {os.getloadavg()[0]:.1f}",
                  flush=True)

        async def sampler() -> None:
            while time.monotonic() < t_end and proc.poll() is None:
                await sample()
                await asyncio.sleep(max(0.0, min(args.sample_s, t_end - time.monotonic())))

        async def worker(k: int) -> None:
            rng = random.Random(args.seed * 1000 + k)
            key = KEYS[k % len(KEYS)]
            while time.monotonic() < t_end and proc.poll() is None:
                kind = rng.choices(kinds, weights)[0]
                try:
                    await one_request(client, kind, rng, key, last_job, prompts, args.steps, tally)
                    tally.done[kind] += 1  # completed round trips, those counted as errors included
                except httpx.HTTPError as e:
                    tally.failed(kind, e)
                    await asyncio.sleep(0.5)  # do not spin if the server is gone

        tasks = [asyncio.ensure_future(worker(k)) for k in range(args.clients)]
        await sampler()
        # requests in flight at the end may finish, but not for ever: a starved or stuck server
        # must still give a report (the stragglers are counted, not waited for)
        _, late = await asyncio.wait(tasks, timeout=args.drain_s)
        for t in late:
            t.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if proc.poll() is None:
            await sample()  # one last point after the clients finish
    wall = time.monotonic() - t0
    return {"samples": samples, "tally": tally, "wall_s": wall, "unfinished_at_end": len(late)}


MIN_SECOND_HALF_REQUESTS = 20  # fewer: the server was starved or stuck, and a flat RSS proves nothing


def verdict(samples: list[dict], seconds: float, requests_per_s: float, max_slope: float) -> dict:
    pts = [(s["t_s"], s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    half = [(t, y) for t, y in pts if t >= seconds / 2]
    in_half = [s["requests_done"] for s in samples if s["t_s"] >= seconds / 2]
    half_requests = in_half[-1] - in_half[0] if in_half else 0
    ts, ys = [t / 60.0 for t, _ in half], [y for _, y in half]
    slope = fit_slope(ts, ys)  # MB per minute
    out = {"second_half_points": len(half),
           "second_half_slope_mb_per_min": round(slope, 3),
           "second_half_max_minus_min_mb": round(max(ys) - min(ys), 2) if ys else None,
           "whole_run_growth_mb": round(pts[-1][1] - pts[0][1], 2) if len(pts) > 1 else None,
           "kb_per_request_if_leak": round(slope * 1024 / (requests_per_s * 60), 3) if requests_per_s else None,
           "second_half_requests": half_requests, "max_slope_mb_per_min": max_slope}
    if len(half) < 3:
        out["verdict"] = "too_short"  # a slope through fewer than three points says nothing
    elif half_requests < MIN_SECOND_HALF_REQUESTS:
        out["verdict"] = "too_little_load"
    else:
        out["verdict"] = "bounded" if slope < max_slope else "growing"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: a fresh tiny model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval")
    ap.add_argument("--steps", type=int, default=4, help="steps per image (job_cancel uses 4x)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--window-ms", type=float, default=0.0)
    ap.add_argument("--url-ttl-s", type=float, default=60.0,
                    help="server's url/finished-job lifetime; short so the stores reach steady state")
    ap.add_argument("--prompts", type=int, default=64, help="size of the prompt pool")
    ap.add_argument("--request-timeout-s", type=float, default=300.0)
    ap.add_argument("--drain-s", type=float, default=120.0,
                    help="after --seconds, how long requests in flight may take before they are abandoned")
    ap.add_argument("--max-slope-mb-per-min", type=float, default=1.0, help="'bounded' below this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_soak.json"))
    args = parse_args_with_out(ap)  # an existing --out: refused now, exit 2

    model = args.model or tiny_model_folder("soak-serve-")
    prompts = [f"soak prompt {i}: a red circle above a blue square" for i in range(args.prompts)]
    env = {**os.environ, "BLINKGEN_API_KEYS": ",".join(KEYS)}
    proc, base = start_server(model, args.max_batch, args.window_ms, args.device,
                              extra_args=["--url-ttl-s", args.url_ttl_s], env=env)
    rss_idle = rss_mb(proc.pid)
    try:
        run = asyncio.run(drive(base, proc, args, prompts))
    finally:
        exit_code = proc.poll()  # None: still alive at the end, as it must be
        stop_server(proc)
    tally: Tally = run["tally"]
    done = sum(tally.done.values())
    rate = done / run["wall_s"] if run["wall_s"] else 0.0
    result = {
        "model": args.model or "tiny (random weights, blinkgen.families.diffusion.folder.tiny)",
        "device": args.device, "clients": args.clients, "seconds": args.seconds, "steps": args.steps,
        "max_batch": args.max_batch, "url_ttl_s": args.url_ttl_s, "prompt_pool": args.prompts,
        "mix_weights": MIX, "sample_s": args.sample_s,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                 "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "server_crashed": exit_code is not None, "wall_s": round(run["wall_s"], 2),
        "unfinished_at_end": run["unfinished_at_end"],
        "rss_idle_mb": rss_idle, "requests_done": dict(tally.done), "requests_per_s": round(rate, 3),
        "errors": {"server_5xx": dict(tally.server_errors), "unexpected_4xx": dict(tally.unexpected),
                   "transport": dict(tally.transport), "examples": tally.examples},
        "rss": run["samples"],
    }
    result["memory"] = verdict(run["samples"], args.seconds, rate, args.max_slope_mb_per_min)
    if result["server_crashed"]:
        result["memory"]["verdict"] = "crashed"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2) + "\n", args.overwrite)
    m = result["memory"]
    print(f"{done} requests ({rate:.2f}/s), 5xx {sum(tally.server_errors.values())}, unexpected 4xx "
          f"{sum(tally.unexpected.values())}, transport {sum(tally.transport.values())}; RSS second half: slope "
          f"{m['second_half_slope_mb_per_min']} MB/min, range {m['second_half_max_minus_min_mb']} MB -> {m['verdict']}")
    print(f"wrote {out}")
    return 0 if m["verdict"] == "bounded" and not tally.server_errors else 1


if __name__ == "__main__":
    sys.exit(main())
